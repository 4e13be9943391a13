"""The two reference points of a strategy comparison: local-only and centralised training.

Both use the cell's own experiment: the same data and train/test splits, the
same model, initial weights (the ServerApp's, seeded by the experiment seed),
optimizer, batch size, local work per round and number of rounds as the
federated runs. They train with the very client code the federation uses
(:class:`clients.regional.RegionalClient`: the compiled-once model, optimizer
reset each round, tf.data shuffle seeded by (seed, round, region)), and encode
rows with the same schema the ServerApp computes from the regions' aggregate
statistics, so the only difference is *who trains with whom*.

- **Local only** (the lower bound federated learning must beat to be worth it):
  every region trains its own model, alone, every round, from the common
  initial weights, and is evaluated on its own test split. Region ``all``
  pools those per-region test statistics. No bytes are exchanged.
- **Centralised** (the upper bound; for reference only, since it pools the
  raw rows, which federated learning exists to avoid): one model trains on all
  regions' training rows pooled, with the same local work per round (``epochs``
  passes over the pooled rows, or ``steps`` x the number of clients sampled per
  round), and is evaluated on every region's test split.

Each writes ``history.csv`` (same columns as a federated run) and
``summary.json`` into its run folder.
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal import data, metrics
from fedglobal.config import ExperimentConfig
from fedglobal.server.history import ALL, COLUMNS

__all__ = ["BaselineRun", "run_centralised", "run_local_only"]

CENTRALISED = "centralised"


class BaselineRun:
    """A finished baseline run: its folder, history (tidy) and summary."""

    def __init__(self, run_dir: Path, history: pd.DataFrame, summary: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.history = history
        self.summary = summary


def _regional_client_class() -> type:
    # fedglobal never imports ``clients`` at import time (DESIGN: imports run one way);
    # the benchmark drives both, like the engines, and resolves the client lazily.
    return importlib.import_module("clients.regional").RegionalClient


def _prepare(cfg: ExperimentConfig) -> tuple[list[str], dict[str, data.RegionArrays], Any, dict]:
    """Regions, their encoded arrays, the federated schema and the initial weights."""
    from fedglobal.server.app import initial_weights

    regions = data.list_regions(cfg)
    tables = {r: data.load_region(cfg, r) for r in regions}
    schema = data.merge_stats([data.local_stats(t, cfg) for t in tables.values()], cfg)
    arrays = {r: data.encode(t, schema) for r, t in tables.items()}
    _, weights = initial_weights(cfg, schema)
    return regions, arrays, schema, weights


def _stats(schema: data.Schema, y: np.ndarray, out: np.ndarray) -> dict[str, float]:
    if schema.task == "classification":
        return metrics.classification_stats(y, out, int(schema.num_classes))
    return metrics.regression_stats(y, out)


def _write(
    run_dir: Path, cfg: ExperimentConfig, rows: list[tuple], kind: str, started: float, extra: dict
) -> BaselineRun:
    history = pd.DataFrame(rows, columns=COLUMNS)
    run_dir.mkdir(parents=True, exist_ok=True)
    history.to_csv(run_dir / "history.csv", index=False)
    (run_dir / "config.toml").write_text(cfg.to_toml(), encoding="utf-8")
    summary = {
        "name": cfg.experiment.name,
        "baseline": kind,
        "seed": cfg.experiment.seed,
        "rounds": int(history["round"].max()) if len(history) else 0,
        "wall_time_s": time.time() - started,
        **extra,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return BaselineRun(run_dir, history, summary)


def _add(rows: list[tuple], rnd: int, region: str, split: str, values: dict[str, float]) -> None:
    rows.extend((rnd, region, split, m, float(v)) for m, v in values.items())


def run_local_only(
    cfg: ExperimentConfig, run_dir: Path, *, on_round: Callable[[int], None] | None = None
) -> BaselineRun:
    """Every region trains alone on its own rows; each is evaluated on its own test split."""
    started = time.time()
    regions, arrays, schema, initial = _prepare(cfg)
    client_cls = _regional_client_class()
    clients = {r: client_cls(arrays[r], cfg, schema) for r in regions}
    weights = {r: dict(initial) for r in regions}
    rows: list[tuple] = []
    round_end_s: list[float] = []
    for rnd in range(cfg.experiment.rounds + 1):
        if rnd > 0:
            train_n, train_loss = 0, 0.0
            for r in regions:
                fit = clients[r].fit(weights[r], rnd)
                weights[r] = fit.weights
                loss = float(fit.metrics.get("loss", math.nan))
                _add(rows, rnd, r, "train", {"loss": loss})
                train_n += fit.num_examples
                train_loss += fit.num_examples * loss
            _add(rows, rnd, ALL, "train", {"loss": train_loss / max(train_n, 1)})
        pooled = []
        for r in regions:
            result = clients[r].evaluate(weights[r])
            _add(rows, rnd, r, "test", metrics.finalize(result.stats, schema.task))
            pooled.append(result.stats)
        _add(rows, rnd, ALL, "test", metrics.finalize(metrics.pool(pooled), schema.task))
        round_end_s.append(round(time.time() - started, 3))
        if on_round:
            on_round(rnd)
    return _write(
        run_dir,
        cfg,
        rows,
        "local-only",
        started,
        {"regions": regions, "num_regions": len(regions), "round_end_s": round_end_s},
    )


def run_centralised(
    cfg: ExperimentConfig,
    run_dir: Path,
    *,
    clients_per_round: int | None = None,
    on_round: Callable[[int], None] | None = None,
) -> BaselineRun:
    """One model on all regions' training rows pooled; evaluated on every region's test split.

    Args:
        clients_per_round: with ``[client] steps``, the pooled model does
            ``steps x clients_per_round`` steps per round (the federation's total);
            default all regions. With ``epochs`` it makes ``epochs`` passes.
    """
    started = time.time()
    regions, arrays, schema, initial = _prepare(cfg)
    pooled = data.RegionArrays(
        region=CENTRALISED,
        x_train=np.concatenate([arrays[r].x_train for r in regions]),
        y_train=np.concatenate([arrays[r].y_train for r in regions]),
        x_test=np.concatenate([arrays[r].x_test for r in regions]),
        y_test=np.concatenate([arrays[r].y_test for r in regions]),
    )
    train_cfg = cfg
    if cfg.client.steps:
        per_round = cfg.client.steps * (clients_per_round or len(regions))
        train_cfg = cfg.replace({"client.steps": per_round})
    client = _regional_client_class()(pooled, train_cfg, schema)
    weights = dict(initial)
    rows: list[tuple] = []
    round_end_s: list[float] = []
    for rnd in range(cfg.experiment.rounds + 1):
        if rnd > 0:
            fit = client.fit(weights, rnd)
            weights = fit.weights
            _add(rows, rnd, ALL, "train", {"loss": float(fit.metrics.get("loss", math.nan))})
        client.set_weights(weights)
        per_region = []
        for r in regions:
            stats = _stats(schema, arrays[r].y_test, client.predict(arrays[r].x_test))
            _add(rows, rnd, r, "test", metrics.finalize(stats, schema.task))
            per_region.append(stats)
        _add(rows, rnd, ALL, "test", metrics.finalize(metrics.pool(per_region), schema.task))
        round_end_s.append(round(time.time() - started, 3))
        if on_round:
            on_round(rnd)
    return _write(
        run_dir,
        cfg,
        rows,
        "centralised",
        started,
        {
            "regions": regions,
            "num_regions": len(regions),
            "round_end_s": round_end_s,
            "train_rows": len(pooled.x_train),
            "steps_per_round": train_cfg.client.steps,
        },
    )
