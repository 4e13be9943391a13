"""Results of a run as Python objects: ``Result``, ``load_run``, the files' schema, and
the run's models (:func:`load_model`: the global one, or a region's personalised one).

The schema of history.csv and summary.json is documented in docs/results.md;
:func:`check_run` checks a run folder against it (a test keeps the two in step).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.config import ExperimentConfig, load_config
from fedglobal.errors import RunError
from fedglobal.run.folder import PERSONAL_DIR

_REQUIRED = ("config.toml", "history.csv", "summary.json", "model.keras")

#: history.csv: its columns, in order, and their types.
HISTORY_COLUMNS = {
    "round": "int",
    "region": "str",
    "split": "str",
    "metric": "str",
    "value": "float",
}
SPLITS = ("train", "test", "server")
METRICS = ("loss", "accuracy", "precision", "recall", "f1", "mae", "rmse", "r2")
#: history.csv metrics of asynchronous strategies (split ``train``): per region, and pooled.
STALENESS_METRICS = ("staleness", "staleness_mean", "staleness_max")

#: summary.json: every key a run writes, and the JSON types its value may have.
SUMMARY_FIELDS: dict[str, tuple[type, ...]] = {
    "version": (int,),
    "name": (str,),
    "seed": (int,),
    "rounds": (int,),
    "strategy": (str,),
    "model": (str,),
    "task": (str,),
    "source": (str,),
    "regions": (list,),
    "num_regions": (int,),
    "final": (dict,),
    "fairness": (dict, type(None)),
    "training": (dict,),
    "wall_time_s": (float, int),
    "rejected_updates": (list,),
    "failed_replies": (list,),
    "retried_stages": (list,),
    "dropped_stragglers": (list,),
    "privacy": (dict,),
    "clipped_updates": (int,),
    "engine": (str,),
    "placement": (dict,),
    "round_end_s": (list,),
    "resumed_from": (dict, type(None)),
    "checkpoints": (list,),
    "stopped": (dict, type(None)),
    "comm": (dict,),
    "hooks": (list,),
    "personal_models": (dict, type(None)),
    "plots": (list,),
    "mlflow": (dict,),
    "sim_total_s": (float, int),
    "sim_time_to_target_s": (float, int, type(None)),
    "geo": (dict,),
    "hierarchy": (dict,),
}
#: Keys written only when the experiment asks for them.
OPTIONAL_SUMMARY_FIELDS = (
    "plots",
    "mlflow",
    "privacy",
    "clipped_updates",
    "sim_total_s",
    "sim_time_to_target_s",
    "geo",
    "hierarchy",
)


@dataclass
class Result:
    """A finished run: its folder, config, history DataFrame, summary and model.

    ``history`` has the columns round, region (``all`` for pooled figures),
    split (``train``, ``test``, ``server``), metric and value.
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

    @property
    def rounds(self) -> pd.DataFrame:
        """rounds.csv: seconds, bytes and messages sent and received per round."""
        return self._table("rounds.csv")

    @property
    def sim_times(self) -> pd.DataFrame:
        """sim_times.csv (``[geo]`` runs): simulated download, compute and upload per
        round and region, when each reply arrived and whether it was kept."""
        return self._table("sim_times.csv")

    @property
    def layer_norms(self) -> pd.DataFrame:
        """layer_norms.csv: the L2 norm of each global variable and of its update per round."""
        return self._table("layer_norms.csv")

    @property
    def stopped(self) -> dict[str, Any] | None:
        """Why the run stopped early (round, reason, by), or None if it ran every round."""
        return self.summary.get("stopped")

    def personal_model(self, region: str) -> Any:
        """Region ``region``'s personalised ``keras.Model`` (its local layers on the global)."""
        return load_model(self, region=region)

    def _table(self, name: str) -> pd.DataFrame:
        path = self.run_dir / name
        if not path.is_file():
            raise RunError(f"{self.run_dir} has no {name} (written by fedglobal >= 0.1 runs)")
        return pd.read_csv(path)

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


def _as_result(run: str | Path | Result) -> Result:
    return run if isinstance(run, Result) else load_run(run)


def personal_regions(run: str | Path | Result) -> dict[str, str]:
    """``{region: file}`` of the personalised layers saved in the run ({} if none)."""
    index = _as_result(run).run_dir / PERSONAL_DIR / "index.json"
    if not index.is_file():
        return {}
    return dict(json.loads(index.read_text(encoding="utf-8")))


def _no_personal_layers(result: Result) -> RunError:
    info = result.summary.get("personal_models")
    strategy = result.summary.get("strategy", result.config.strategy.name)
    if info and not info.get("layers"):
        return RunError(
            f"strategy {strategy!r} keeps no layers local, so every region's model is the "
            "global model: export without --region"
        )
    if info and info.get("failed"):
        return RunError(
            "no region sent its local layers at the end of this run "
            f"(first failure: {info['failed'][0]})"
        )
    return RunError(
        f"{result.run_dir} holds no personalised layers: run with "
        "[output] personal_models = true and a strategy that keeps layers local "
        "(layerwise with rule = 'local', fedper, fedbn) or personal models (ditto)"
    )


def load_model(run: str | Path | Result, *, region: str | None = None) -> Any:
    """The run's global ``keras.Model``, or region ``region``'s personalised model."""
    import keras

    result = _as_result(run)
    model = keras.saving.load_model(result.run_dir / "model.keras")
    if region is None:
        return model
    index = personal_regions(result)
    if not index:
        raise _no_personal_layers(result)
    if region not in index:
        raise RunError(
            f"no personalised layers for region {region!r} in {result.run_dir} "
            f"(regions: {', '.join(sorted(index))})"
        )
    with np.load(result.run_dir / PERSONAL_DIR / index[region]) as own:
        local = {name: own[name] for name in own.files}
    variables = {v.path: v for v in model.weights}
    for name, value in local.items():
        if name not in variables:
            raise RunError(f"personalised layer {name!r} of region {region!r} is not in the model")
        if tuple(variables[name].shape) != value.shape:
            raise RunError(
                f"personalised layer {name!r} of region {region!r} has shape {value.shape}, "
                f"the model expects {tuple(variables[name].shape)}"
            )
        variables[name].assign(value)
    return model


def check_run(path: str | Path) -> list[str]:
    """Problems of a run folder against the documented schema ([] if it conforms)."""
    run_dir = Path(path)
    problems = [f"missing {name}" for name in _REQUIRED if not (run_dir / name).is_file()]
    if problems:
        return problems
    history = pd.read_csv(run_dir / "history.csv", dtype={"region": str})
    if list(history.columns) != list(HISTORY_COLUMNS):
        problems.append(f"history.csv columns {list(history.columns)} != {list(HISTORY_COLUMNS)}")
        return problems
    if not pd.api.types.is_integer_dtype(history["round"]) or (history["round"] < 0).any():
        problems.append("history.csv: round must be integers >= 0")
    if not pd.api.types.is_numeric_dtype(history["value"]):
        problems.append("history.csv: value must be numeric")
    for column, allowed in (("split", SPLITS), ("metric", METRICS + STALENESS_METRICS)):
        unknown = sorted(set(history[column]) - set(allowed))
        if unknown:
            problems.append(f"history.csv: unknown {column} values {unknown}")
    if not (history.region == "all").any():
        problems.append("history.csv: no pooled rows (region 'all')")
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    for key, value in summary.items():
        if key not in SUMMARY_FIELDS:
            problems.append(f"summary.json: undocumented key {key!r}")
        elif not isinstance(value, SUMMARY_FIELDS[key]) or isinstance(value, bool):
            problems.append(f"summary.json: {key} has type {type(value).__name__}")
    for key in SUMMARY_FIELDS:
        if key not in summary and key not in OPTIONAL_SUMMARY_FIELDS:
            problems.append(f"summary.json: missing key {key!r}")
    return problems
