"""System metrics: bytes and messages per round, wall time, the training path, the clock.

:class:`SystemMetrics` wraps the run's Grid in a
:class:`~fedglobal.server.comm.CountingGrid` (:meth:`SystemMetrics.count`)
and after round 0 and every round adds one row to rounds.csv: ``round,
seconds, bytes_sent, bytes_received, array_bytes_sent, array_bytes_received,
messages_sent, messages_received, trained_by, fallback_reason`` and, with
``[geo]``, ``sim_start_s, sim_end_s``. It returns the byte and message counts
as ``comm/<column>``, the wall time as ``time/round_seconds`` and, with
``[geo]``, the simulated end as ``time/sim_hours``. A round's regions trained
with Keras ``fit`` rather than in a cohort are logged once per run and reason.

summary.json gains ``comm`` (the run's totals) and ``training``
(:func:`training_summary`); checkpoints keep the rows and the byte counters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.serverapp import Grid

from fedglobal.run.folder import write_table
from fedglobal.server.callbacks.base import RoundCallback, RoundOutcome
from fedglobal.server.callbacks.geo import GeoOutputs
from fedglobal.server.comm import CommCounts, CountingGrid

__all__ = ["SystemMetrics", "training_summary"]

log = logging.getLogger(__name__)

#: rounds.csv's columns that are no TensorBoard ``comm/`` scalar.
NOT_COMM = ("round", "seconds", "sim_start_s", "sim_end_s")


def training_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """summary.json's ``training``: which path trained each round and why not the cohort.

    ``by_round`` maps each round with train replies to ``cohort``, ``keras-fit`` or
    the mix (``cohort:N keras-fit:M``); ``fallbacks`` maps each reason a round's
    regions trained with Keras ``fit`` to the rounds it applied to.
    """
    by_round: dict[str, str] = {}
    fallbacks: dict[str, list[int]] = {}
    for row in rows:
        trained_by = str(row.get("trained_by") or "")
        if not trained_by:
            continue
        by_round[str(int(row["round"]))] = trained_by
        reason = str(row.get("fallback_reason") or "")
        if reason:
            fallbacks.setdefault(reason, []).append(int(row["round"]))
    paths = set(by_round.values())
    path = next(iter(paths)) if len(paths) == 1 else ("mixed" if paths else "")
    return {"path": path, "by_round": by_round, "fallbacks": fallbacks}


def comm_totals(counts: CommCounts) -> dict[str, int]:
    """summary.json's ``comm``: the bytes and messages of a whole run."""
    return {
        "bytes_sent": counts.sent,
        "bytes_received": counts.received,
        "array_bytes_sent": counts.sent_arrays,
        "array_bytes_received": counts.received_arrays,
        "messages_sent": counts.messages_sent,
        "messages_received": counts.messages_received,
    }


class SystemMetrics(RoundCallback):
    """rounds.csv and the run's byte totals (see the module docstring).

    Args:
        run_dir: the run folder.
        geo: the clock's outputs (each round's simulated span).
    """

    def __init__(self, run_dir: Path, geo: GeoOutputs) -> None:
        self.run_dir = Path(run_dir)
        self.geo = geo
        self.counting: CountingGrid | None = None
        self.rows: list[dict[str, Any]] = []
        self.counts_before = CommCounts()
        self.time_before = time.time()
        self.fallbacks_logged: set[str] = set()

    def count(self, grid: Grid) -> CountingGrid:
        """Wrap ``grid`` so the bytes of every message are counted."""
        self.counting = CountingGrid(grid)
        return self.counting

    @property
    def counts(self) -> CommCounts:
        """The run's counts so far (without a counting Grid: those loaded from a checkpoint)."""
        return self.counting.counts if self.counting else self.counts_before

    def after_round(
        self, server_round: int, weights: Mapping[str, np.ndarray], metrics: Mapping[str, float]
    ) -> RoundOutcome:
        now = time.time()
        counts = self.counts.copy()
        delta = counts.minus(self.counts_before)
        row: dict[str, Any] = {"round": server_round, "seconds": round(now - self.time_before, 4)}
        row.update(comm_totals(delta))
        if self.counting is not None:  # which path trained the round's regions, and why not cohort
            row["trained_by"], row["fallback_reason"] = self.counting.paths.take()
            self._log_fallback(server_round, row["fallback_reason"])
        span = self.geo.span(server_round)
        if span is not None:
            row["sim_start_s"], row["sim_end_s"] = round(span[0], 6), round(span[1], 6)
        self.rows.append(row)
        self.counts_before, self.time_before = counts, now
        out = {
            f"comm/{k}": v for k, v in row.items() if k not in NOT_COMM and not isinstance(v, str)
        }
        out["time/round_seconds"] = row["seconds"]
        if "sim_end_s" in row:  # [geo]: simulated hours, for plotting against them
            out["time/sim_hours"] = row["sim_end_s"] / 3600.0
        return RoundOutcome(out)

    def _log_fallback(self, server_round: int, reason: str) -> None:
        if not reason or reason in self.fallbacks_logged:  # once per run and reason
            return
        self.fallbacks_logged.add(reason)
        chosen = "client.cohort = false" in reason or "cohort of one" in reason
        log.log(
            logging.INFO if chosen else logging.WARNING,
            "round %d: regions trained with Keras fit, not in a cohort: %s",
            server_round,
            reason,
        )

    def summary(self) -> dict[str, Any]:
        return {"comm": comm_totals(self.counts), "training": training_summary(self.rows)}

    def on_run_end(self, history: pd.DataFrame) -> dict[str, Any]:
        write_table(self.run_dir, "rounds.csv", pd.DataFrame(self.rows))
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"round_rows": [dict(row) for row in self.rows], "counts": dict(vars(self.counts))}

    def load_state_dict(self, state: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        """The byte counters become the checkpoint's: call it after the start-up messages
        (statistics query), so rounds.csv counts only the rounds' messages."""
        self.rows = [dict(row) for row in state.get("round_rows", [])]
        counts = CommCounts(**{k: int(v) for k, v in state.get("counts", {}).items()})
        if self.counting is not None:
            self.counting.counts = counts
        self.counts_before = counts.copy()
        self.time_before = time.time()
