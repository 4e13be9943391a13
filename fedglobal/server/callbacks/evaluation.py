"""Server-side evaluation: the held-out set (``[server] eval_source``) and hooks' ``evaluate``.

:class:`ServerEvaluation` is the round-end job: after round 0 and every round
it puts the global weights into the model and records what every evaluating
hook returns as split ``server`` (region ``all``) of the history.

The server reads the held-out table itself (it never comes from a client),
encodes it with the federated schema, and evaluates the global model after
every round with the same metrics as the clients. The table needs the
experiment's feature and target columns; any region column is ignored and
rows with a missing target are dropped. In deployment, the file must exist on
the server's machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedglobal import metrics
from fedglobal.config import ExperimentConfig
from fedglobal.data import RegionTable, Schema, encode
from fedglobal.data.sources import read_source
from fedglobal.errors import DataError
from fedglobal.server.callbacks.base import RoundCallback, RoundOutcome, TrainRun
from fedglobal.server.callbacks.hooks import ServerHook
from fedglobal.server.history import HistoryRecorder

__all__ = ["HeldOutEvaluation", "ServerEvaluation", "evaluates", "load_held_out"]

_CHUNK = 8192


def load_held_out(cfg: ExperimentConfig, schema: Schema, source: str) -> tuple[np.ndarray, Any]:
    """The held-out rows of ``source``, encoded with ``schema``: ``(x, y)``."""
    held_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=source))
    table = read_source(held_cfg)
    missing = [c for c in [*schema.raw_features, schema.target] if c not in table.columns]
    if missing:
        raise DataError(
            f"server.eval_source {source!r} lacks the column(s) {', '.join(map(repr, missing))} "
            f"(it has: {', '.join(map(str, table.columns[:30]))})"
        )
    rows = table.loc[table[schema.target].notna(), [*schema.raw_features, schema.target]]
    if rows.empty:
        raise DataError(f"server.eval_source {source!r} has no rows with a target value")
    arrays = encode(RegionTable("server", rows.iloc[:0], rows.reset_index(drop=True)), schema)
    return arrays.x_test, arrays.y_test


class HeldOutEvaluation(ServerHook):
    """Evaluates the global model on a held-out table each round (split ``server``)."""

    def __init__(self, cfg: ExperimentConfig, schema: Schema, source: str) -> None:
        self.schema = schema
        self.source = source
        self.x, self.y = load_held_out(cfg, schema, source)

    def evaluate(self, server_round: int, model: Any) -> Mapping[str, float]:
        outs = [
            np.asarray(model(self.x[i : i + _CHUNK], training=False))
            for i in range(0, len(self.x), _CHUNK)
        ]
        out = np.concatenate(outs)
        if self.schema.task == "classification":
            stats = metrics.classification_stats(self.y, out, self.schema.num_classes)
        else:
            stats = metrics.regression_stats(self.y, out)
        return metrics.finalize(stats, self.schema.task)

    def __repr__(self) -> str:
        return f"HeldOutEvaluation({self.source!r}, rows={len(self.x)})"


def evaluates(hooks: Sequence[ServerHook]) -> bool:
    """Whether any of ``hooks`` evaluates on the server (overrides ``evaluate``)."""
    return any(type(h).evaluate is not ServerHook.evaluate for h in hooks)


class ServerEvaluation(RoundCallback):
    """Records the evaluating hooks' metrics each round (split ``server``).

    Args:
        cfg: the experiment (``[server] eval_source``: the held-out table).
        recorder: the run's history.
        hooks: the run's hooks, shared with
            :class:`~fedglobal.server.callbacks.hooks.RunHooks`; with an
            ``eval_source``, a :class:`HeldOutEvaluation` goes first when the
            rounds begin (it needs the federated schema).

    Returns the metrics as ``server/<metric>``.
    """

    def __init__(
        self, cfg: ExperimentConfig, recorder: HistoryRecorder, hooks: list[ServerHook]
    ) -> None:
        self.cfg = cfg
        self.recorder = recorder
        self.hooks = hooks
        self.model: Any = None

    def on_train_begin(self, run: TrainRun) -> None:
        if self.cfg.server.eval_source:
            self.hooks.insert(
                0, HeldOutEvaluation(self.cfg, run.schema, self.cfg.server.eval_source)
            )
        self.model = run.model

    def after_round(
        self, server_round: int, weights: Mapping[str, np.ndarray], metrics: Mapping[str, float]
    ) -> RoundOutcome | None:
        if not evaluates(self.hooks):
            return None
        model = self.model
        model.set_weights([weights[v.path] for v in model.weights])
        values: dict[str, float] = {}
        for hook in self.hooks:
            if evaluates([hook]):
                out = hook.evaluate(server_round, model)
                values.update({str(k): float(v) for k, v in (out or {}).items()})
        self.recorder.record_server(server_round, values)
        return RoundOutcome({f"server/{k}": v for k, v in values.items()})
