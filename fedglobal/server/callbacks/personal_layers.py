"""Personal layers: each region's local layers, collected after the last round.

With ``[output] personal_models = true``, :class:`PersonalLayers` asks every
region (message type :data:`fedglobal.protocol.LOCAL_LAYERS_QUERY`) for the
layers the strategy keeps local
(:meth:`strategies.interface.StrategyView.local_layers`: a layered strategy's local
layers, Ditto's whole personal model) once the rounds are over, also after a stopped
run. Each region's copy goes to
``<run>/personal/region-NNNN.npz``, named in ``personal/index.json``.
summary.json's ``personal_models`` says which layers, which regions, and which
failed (null when not asked for).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, RecordDict

from fedglobal.protocol import (
    LOCAL_LAYERS_KEY,
    LOCAL_LAYERS_QUERY,
    META_KEY,
    REGION_KEY,
    SERVER_ROUND_KEY,
    from_record,
)
from fedglobal.run.folder import PERSONAL_DIR
from fedglobal.server.callbacks.base import RoundCallback, TrainRun
from fedglobal.server.history import HistoryRecorder
from strategies.interface import view

__all__ = ["PersonalLayers"]

log = logging.getLogger(__name__)


class PersonalLayers(RoundCallback):
    """Collects the regions' local layers at the end (see the module docstring).

    Args:
        run_dir: the run folder.
        recorder: the run's history (its last round).
        collect: whether to collect (``[output] personal_models``).
    """

    def __init__(self, run_dir: Path, recorder: HistoryRecorder, *, collect: bool) -> None:
        self.run_dir = Path(run_dir)
        self.recorder = recorder
        self.collect = collect
        self.run: TrainRun | None = None
        #: summary.json's ``personal_models`` (None until collected).
        self.personal: dict[str, Any] | None = None

    def on_train_begin(self, run: TrainRun) -> None:
        self.run = run

    def on_train_end(self) -> None:
        if self.collect and self.run is not None:
            self.personal = self._collect(self.run)

    def summary(self) -> dict[str, Any]:
        return {"personal_models": self.personal}

    def _collect(self, run: TrainRun) -> dict[str, Any]:
        last = int(self.recorder.rows[-1][0]) if self.recorder.rows else 0
        local = view(run.strategy).local_layers(last)
        if not local:
            return {"layers": [], "regions": [], "failed": [], "note": "no local layers"}
        base = dict(run.train_config or {})
        base.update({LOCAL_LAYERS_KEY: local, SERVER_ROUND_KEY: last})
        messages = [
            Message(RecordDict({"config": ConfigRecord(dict(base))}), node, LOCAL_LAYERS_QUERY)
            for node in sorted(run.grid.get_node_ids())
        ]
        replies = run.grid.send_and_receive(messages, timeout=run.timeout)
        out = self.run_dir / PERSONAL_DIR
        regions, failed, index = [], [], {}
        for reply in replies:
            if reply.has_error():
                failed.append(reply.error.reason)
                continue
            region = str(reply.content[META_KEY][REGION_KEY])
            arrays = from_record(reply.content["arrays"])
            unknown = sorted(set(arrays) - set(local))
            if unknown:
                failed.append(f"region {region}: sent non-local variables {unknown[:5]}")
                continue
            out.mkdir(parents=True, exist_ok=True)
            name = f"region-{len(index):04d}.npz"
            with (out / name).open("wb") as fh:
                np.savez(fh, **arrays)
            index[region] = name
            regions.append(region)
        if index:
            (out / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        if failed:
            log.warning("%d region(s) sent no local layers: %s", len(failed), failed[0])
        return {"layers": local, "regions": sorted(regions), "failed": failed}
