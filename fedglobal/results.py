"""Results of a run as Python objects: ``Result`` and ``load_run``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from fedglobal.config import ExperimentConfig, load_config
from fedglobal.errors import RunError

_REQUIRED = ("config.toml", "history.csv", "summary.json", "model.keras")


@dataclass
class Result:
    """A finished run: its folder, config, history DataFrame, summary and model.

    ``history`` has the columns round, region (``all`` for pooled figures),
    split (``train``, ``test``), metric and value.
    """

    run_dir: Path
    config: ExperimentConfig
    history: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def model(self) -> Any:
        """The final global ``keras.Model`` (loaded on first use)."""
        import keras

        return keras.saving.load_model(self.run_dir / "model.keras")

    def metric(self, metric: str, *, split: str = "test", region: str = "all") -> pd.Series:
        """One metric by round, e.g. ``result.metric("r2")`` for pooled test R²."""
        h = self.history
        rows = h[(h.metric == metric) & (h.split == split) & (h.region == region)]
        return rows.set_index("round")["value"]

    def final(self, metric: str, *, split: str = "test", region: str = "all") -> float:
        """The metric's value in the last round."""
        series = self.metric(metric, split=split, region=region)
        if series.empty:
            raise RunError(f"no {split} {metric!r} for region {region!r} in {self.run_dir}")
        return float(series.iloc[-1])


def load_run(path: str | Path) -> Result:
    """Load a run folder written by any engine."""
    run_dir = Path(path)
    missing = [name for name in _REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise RunError(f"{run_dir} is not a complete run folder: missing {', '.join(missing)}")
    config = load_config(run_dir / "config.toml")
    history = pd.read_csv(run_dir / "history.csv", dtype={"region": str})
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return Result(run_dir=run_dir, config=config, history=history, summary=summary)
