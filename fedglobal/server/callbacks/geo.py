"""The simulated clock's outputs (``[geo]``): sim_times.csv and the summary fields.

:class:`GeoOutputs` holds the clock's hook, a
:class:`fedglobal.geo.grid.GeoRounds` (or, for hierarchical rounds, a
:class:`fedglobal.geo.hierarchy.HierRounds`), once
:meth:`~fedglobal.server.monitor.RunMonitor.attach_clock` has set it. The
system metrics read each round's simulated span from it (rounds.csv's
``sim_start_s``, ``sim_end_s``) and the plots draw its figures. Once the run
folder is written it adds sim_times.csv and the fields of
:func:`fedglobal.geo.outputs.summary_fields`; the clock's state is saved in
checkpoints under ``"geo"``. Without ``[geo]`` it does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.run.folder import write_table
from fedglobal.server.callbacks.base import RoundCallback

__all__ = ["GeoOutputs"]


class GeoOutputs(RoundCallback):
    """The clock's files and summary fields (see the module docstring)."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        #: The simulated clock's hook, or None without ``[geo]``.
        self.geo: Any = None

    def attach(self, geo: Any) -> None:
        """Time the rounds on ``geo`` (it replaces any hook attached before)."""
        self.geo = geo

    def span(self, server_round: int) -> tuple[float, float] | None:
        """``(sim_start_s, sim_end_s)`` of ``server_round`` (0, 0 for round 0; NaN when the
        clock has no span for it), or None without ``[geo]``."""
        if self.geo is None:
            return None
        span = self.geo.clock.span(server_round)
        start, end = (span.start_s, span.end_s) if span else (np.nan, np.nan)
        if server_round == 0:
            start = end = 0.0
        return start, end

    def sim_end_s(self, server_round: int) -> float | None:
        """The simulated end of ``server_round`` (0 for round 0; None without ``[geo]``)."""
        if self.geo is None:
            return None
        span = self.geo.clock.span(server_round)
        return span.end_s if span is not None else (0.0 if server_round == 0 else None)

    def on_run_end(self, history: pd.DataFrame) -> dict[str, Any]:
        if self.geo is None:
            return {}
        from fedglobal.geo.outputs import sim_times_frame, summary_fields

        assert self.cfg.geo is not None
        write_table(self.run_dir, "sim_times.csv", sim_times_frame(self.geo.clock))
        return summary_fields(
            self.geo.clock, history, target=self.cfg.geo.target, server=self.geo.server
        )

    def state_dict(self) -> dict[str, Any]:
        return {"geo": self.geo.state_dict()} if self.geo is not None else {}

    def load_state_dict(self, state: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        if self.geo is not None and "geo" in state:
            self.geo.load_state_dict(state["geo"])
