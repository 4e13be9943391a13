"""Weight norms: the L2 norm of every global variable and of its change in the round.

After round 0 and every round :class:`WeightNorms` adds one row per variable
to layer_norms.csv (``round, variable, weight_norm, update_norm``; the
update norm is empty in round 0) and returns the norms as
``weight_norm/<variable>`` and ``update_norm/<variable>`` (TensorBoard's tags).
Norms are taken in float64.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.run.folder import write_table
from fedglobal.server.callbacks.base import RoundCallback, RoundOutcome

__all__ = ["COLUMNS", "WeightNorms"]

#: layer_norms.csv's columns.
COLUMNS = ["round", "variable", "weight_norm", "update_norm"]


class WeightNorms(RoundCallback):
    """layer_norms.csv, and the norms for the callbacks after it (see the module docstring)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[tuple[int, str, float, float]] = []
        self.previous: dict[str, np.ndarray] | None = None

    def after_round(
        self, server_round: int, weights: Mapping[str, np.ndarray], metrics: Mapping[str, float]
    ) -> RoundOutcome:
        out: dict[str, float] = {}
        for name, value in weights.items():
            w = np.asarray(value, dtype=np.float64)
            update = None
            if self.previous is not None and name in self.previous:
                update = float(np.linalg.norm(w - self.previous[name]))
            norm = float(np.linalg.norm(w))
            out[f"weight_norm/{name}"] = norm
            if update is not None:
                out[f"update_norm/{name}"] = update
            self.rows.append((server_round, name, norm, np.nan if update is None else update))
        self.previous = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        return RoundOutcome(out)

    def on_run_end(self, history: pd.DataFrame) -> dict[str, Any]:
        write_table(self.run_dir, "layer_norms.csv", pd.DataFrame(self.rows, columns=COLUMNS))
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"norm_rows": [list(row) for row in self.rows]}

    def load_state_dict(self, state: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        self.rows = [tuple(row) for row in state.get("norm_rows", [])]  # type: ignore[misc]
        self.previous = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
