"""The run folder: what a finished run leaves on disk (DESIGN.md, decision 9).

``runs/<name>-<timestamp>/`` holds config.toml (resolved), history.csv (tidy:
round, region, split, metric, value), summary.json, model.keras (the final
global model), checkpoint.npz (final named weights and round) and schema.json.
Files are written to a temporary name and renamed, so a crash never leaves a
half-written file behind under the final name.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal import metrics
from fedglobal.config import ExperimentConfig
from fedglobal.data import Schema

SUMMARY_VERSION = 1
#: Sub-folder of personalised (local) layers, one .npz per region, named in index.json.
PERSONAL_DIR = "personal"


def new_run_dir(cfg: ExperimentConfig, root: str | Path | None = None) -> Path:
    """A fresh ``<root>/<name>-<timestamp>`` folder (suffixed if it already exists)."""
    root = Path(root) if root is not None else Path(cfg.experiment.output_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / f"{cfg.experiment.name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    path.mkdir(parents=True)
    return path


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def _final_metrics(history: pd.DataFrame) -> dict[str, dict[str, float]]:
    if history.empty:
        return {}
    last = history[history["round"] == history["round"].max()]
    out: dict[str, dict[str, float]] = {}
    for row in last.itertuples(index=False):
        out.setdefault(f"{row.split}/{row.region}", {})[row.metric] = float(row.value)
    return out


def write_run_folder(
    run_dir: Path,
    *,
    cfg: ExperimentConfig,
    history: pd.DataFrame,
    model: Any,
    weights: Mapping[str, np.ndarray],
    schema: Schema,
    regions: list[str],
    extra: Mapping[str, Any],
) -> None:
    """Write every file of a finished run into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(run_dir / "config.toml", lambda p: p.write_text(cfg.to_toml(), encoding="utf-8"))
    _atomic_write(run_dir / "history.csv", lambda p: history.to_csv(p, index=False))
    _atomic_write(
        run_dir / "schema.json", lambda p: p.write_text(schema.to_json(), encoding="utf-8")
    )
    rounds = int(history["round"].max()) if not history.empty else 0
    _atomic_write(
        run_dir / "checkpoint.npz",
        lambda p: np.savez(p.open("wb"), __round__=np.int64(rounds), **dict(weights)),
    )
    tmp_model = run_dir / ".model.tmp.keras"  # Keras insists on the .keras suffix
    model.save(tmp_model)
    os.replace(tmp_model, run_dir / "model.keras")
    summary = {
        "version": SUMMARY_VERSION,
        "name": cfg.experiment.name,
        "seed": cfg.experiment.seed,
        "rounds": rounds,
        "strategy": cfg.strategy.name,
        "model": cfg.model.name,
        "task": cfg.data.task,
        "source": cfg.data.source,
        "regions": regions,
        "num_regions": len(regions),
        "final": _final_metrics(history),
        "fairness": metrics.fairness(history, cfg.data.task),
        **dict(extra),
    }
    _atomic_write(
        run_dir / "summary.json",
        lambda p: p.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8"),
    )


def write_table(run_dir: Path, name: str, frame: pd.DataFrame) -> Path:
    """Write one more CSV table into the run folder (atomically)."""
    path = Path(run_dir) / name
    _atomic_write(path, lambda p: frame.to_csv(p, index=False))
    return path


def update_summary(run_dir: Path, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Add ``fields`` to the run's summary.json (atomically); returns the new summary."""
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text(encoding="utf-8"))
    summary.update(dict(fields))
    _atomic_write(
        path, lambda p: p.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    )
    return summary
