"""Server-side evaluation on a held-out set (``[server] eval_source``).

The server reads the held-out table itself (it never comes from a client),
encodes it with the federated schema, and evaluates the global model after
every round with the same metrics as the clients. The table needs the
experiment's feature and target columns; any region column is ignored and
rows with a missing target are dropped. In deployment, the file must exist on
the server's machine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedglobal import metrics
from fedglobal.config import ExperimentConfig
from fedglobal.data import RegionTable, Schema, encode
from fedglobal.data.sources import read_source
from fedglobal.errors import DataError
from fedglobal.server.hooks import ServerHook

__all__ = ["HeldOutEvaluation", "load_held_out"]

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
