"""Optional MLflow logging of a finished run (``[output] mlflow = true``).

Needs the ``mlflow`` package (``pip install mlflow-skinny`` is enough, or
``pip install -e '.[mlflow]'``). At the end of a run the server logs to one
MLflow run named after the run folder:

- params: every key of the resolved experiment, as ``section.key``;
- metrics: the pooled metrics of every round (``test/r2``, ``train/loss``,
  ``server/accuracy``...; step = round) and the bytes communicated per round;
- artifacts: config.toml, history.csv, summary.json, schema.json,
  model.keras and the plots;
- tags: ``fedglobal.run_dir``, ``fedglobal.engine``.

The tracking URI is ``[output] mlflow_tracking_uri``, else the environment's
``MLFLOW_TRACKING_URI``, else ``sqlite:///<output_dir>/mlflow.db``. With a
SQLite store, a new MLflow experiment keeps its artifacts in ``mlartifacts/``
beside the database file. The experiment is ``[output]
mlflow_experiment``, else ``experiment.name``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.errors import ConfigError

__all__ = ["available", "check_available", "log_run", "tracking_uri"]

_KEY = re.compile(r"[^\w\-. /]")
_ARTIFACTS = ("config.toml", "history.csv", "summary.json", "schema.json", "model.keras")


def available() -> bool:
    """Whether the ``mlflow`` package can be imported."""
    return importlib.util.find_spec("mlflow") is not None


def check_available(cfg: ExperimentConfig) -> None:
    """Raise ConfigError up front if the experiment asks for MLflow and it is missing."""
    if cfg.output.mlflow and not available():
        raise ConfigError(
            "output.mlflow = true but the mlflow package is not installed: "
            "pip install mlflow-skinny (or set output.mlflow = false)"
        )


def tracking_uri(cfg: ExperimentConfig, run_dir: Path) -> str:
    """Where the run is logged (see the module docstring)."""
    if cfg.output.mlflow_tracking_uri:
        return cfg.output.mlflow_tracking_uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path(run_dir).resolve().parent / 'mlflow.db'}"


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside it (MLflow's default is ./mlruns)."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()
    return None  # a tracking server decides


def _params(cfg: ExperimentConfig) -> dict[str, str]:
    out = {}
    for section, values in cfg.to_dict().items():
        for key, value in values.items():
            out[f"{section}.{key}"] = str(value)[:6000]
    return out


def _metric_key(*parts: str) -> str:
    return "/".join(_KEY.sub("_", p) for p in parts)


def log_run(
    cfg: ExperimentConfig,
    run_dir: Path,
    history: pd.DataFrame,
    *,
    system: pd.DataFrame | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Log the run to MLflow; returns ``{"run_id", "experiment_id", "tracking_uri"}``."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(cfg, run_dir)
    client = MlflowClient(tracking_uri=uri)
    name = cfg.output.mlflow_experiment or cfg.experiment.name
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        experiment_id = client.create_experiment(name, artifact_location=_artifact_root(uri))
    else:
        experiment_id = experiment.experiment_id
    all_tags = {"fedglobal.run_dir": str(run_dir), **dict(tags or {})}
    run = client.create_run(experiment_id, run_name=Path(run_dir).name, tags=all_tags)
    run_id = run.info.run_id
    status = "FAILED"
    try:
        stamp = int(run.info.start_time)
        metrics = [
            Metric(_metric_key(r.split, r.metric), float(r.value), stamp, int(r.round))
            for r in history[history.region == "all"].itertuples(index=False)
        ]
        if system is not None:
            for row in system.itertuples(index=False):
                for column in ("bytes_sent", "bytes_received"):
                    value = float(getattr(row, column))
                    metrics.append(Metric(f"comm/{column}", value, stamp, int(row.round)))
        params = [Param(k, v) for k, v in _params(cfg).items()]
        for i in range(0, max(len(params), 1), 100):
            client.log_batch(run_id, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        for artifact in _ARTIFACTS:
            if (Path(run_dir) / artifact).exists():
                client.log_artifact(run_id, str(Path(run_dir) / artifact))
        if (Path(run_dir) / "plots").is_dir():
            client.log_artifacts(run_id, str(Path(run_dir) / "plots"), artifact_path="plots")
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return {"run_id": run_id, "experiment_id": experiment_id, "tracking_uri": uri}
