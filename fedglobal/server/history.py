"""The run's history: tidy rows (round, region, split, metric, value).

The recorder is handed to the strategy as its metric aggregation functions, so
it sees every reply's metrics exactly as the strategy does, on any engine.
Region ``all`` holds pooled figures: for evaluation, metrics of all regions'
test rows pooled, computed exactly from the clients' summed statistics. Split
``server`` holds the server's own evaluation on a held-out set, if any.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd
from flwr.app import MetricRecord, RecordDict

from fedglobal import metrics
from fedglobal.protocol import META_KEY

COLUMNS = ["round", "region", "split", "metric", "value"]
#: A train reply's staleness (server steps since its model was sent; asynchronous
#: strategies add it to their replies' metrics): per region, and pooled as
#: ``staleness_mean`` and ``staleness_max`` (region ``all``, split ``train``).
STALENESS = "staleness"
ALL = "all"


def _region_and_round(record: RecordDict) -> tuple[str, int]:
    meta = record.get(META_KEY)
    if meta is None:
        return "unknown", 0
    return str(meta.get("region", "unknown")), int(meta.get("round", 0))


@dataclass
class HistoryRecorder:
    """Collects history rows and computes the pooled (region ``all``) metrics."""

    task: str
    on_round: Callable[[int, str, dict[str, float], list[str]], None] | None = None
    rows: list[tuple[int, str, str, str, float]] = field(default_factory=list)

    def add(self, server_round: int, region: str, split: str, values: dict[str, float]) -> None:
        for metric, value in values.items():
            self.rows.append((server_round, region, split, metric, float(value)))

    def aggregate_train(self, records: Sequence[RecordDict], weighted_by_key: str) -> MetricRecord:
        """Per-region train loss rows, and their example-weighted mean as ``all``."""
        total, weighted, server_round, regions = 0.0, 0.0, 0, []
        staleness: list[float] = []
        for record in records:
            region, server_round = _region_and_round(record)
            values = record["metrics"]
            n = float(values[weighted_by_key])
            loss = float(values.get("loss", math.nan))
            row = {"loss": loss}
            if STALENESS in values:  # asynchronous strategies (strategies.asynchronous)
                row[STALENESS] = float(values[STALENESS])
                staleness.append(row[STALENESS])
            self.add(server_round, region, "train", row)
            total += n
            weighted += n * loss
            regions.append(region)
        pooled = {"loss": weighted / total} if total > 0 else {}
        if staleness:  # the staleness distribution of the server step
            pooled["staleness_mean"] = sum(staleness) / len(staleness)
            pooled["staleness_max"] = max(staleness)
        self.add(server_round, ALL, "train", pooled)
        if self.on_round:
            self.on_round(server_round, "train", pooled, regions)
        return MetricRecord(pooled)

    def aggregate_evaluate(
        self, records: Sequence[RecordDict], weighted_by_key: str
    ) -> MetricRecord:
        """Per-region test metrics, and the metrics of all test rows pooled."""
        all_stats, server_round, regions = [], 0, []
        for record in records:
            region, server_round = _region_and_round(record)
            stats = metrics.from_record_values(record["metrics"])
            self.add(server_round, region, "test", metrics.finalize(stats, self.task))
            all_stats.append(stats)
            regions.append(region)
        pooled = metrics.finalize(metrics.pool(all_stats), self.task)
        self.add(server_round, ALL, "test", pooled)
        if self.on_round:
            self.on_round(server_round, "test", pooled, regions)
        return MetricRecord(pooled)

    def record_server(self, server_round: int, values: dict[str, float]) -> None:
        """Server-side evaluation metrics (split ``server``, region ``all``)."""
        self.add(server_round, ALL, "server", values)
        if self.on_round:
            self.on_round(server_round, "server", dict(values), [])

    def round_rows(self, server_round: int) -> list[tuple[int, str, str, str, float]]:
        """The rows recorded for ``server_round`` so far."""
        return [row for row in self.rows if row[0] == server_round]

    def pooled(self, server_round: int) -> dict[str, float]:
        """The round's pooled metrics as ``{"split/metric": value}`` (e.g. ``test/r2``)."""
        return {
            f"{split}/{metric}": value
            for r, region, split, metric, value in self.rows
            if r == server_round and region == ALL
        }

    def frame(self) -> pd.DataFrame:
        """The history as a tidy DataFrame (the history.csv schema)."""
        return pd.DataFrame(self.rows, columns=COLUMNS)
