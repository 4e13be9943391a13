"""Federated normalisation: per-region aggregates (:func:`local_stats`) merged into
the global :class:`~fedglobal.data.schema.Schema` (:func:`merge_stats`).

A client sends only sums, sums of squares, counts and the sets of category
values and labels seen in its train split, never rows. Pooled means and
variances are then exact: ``mean = sum / count`` and
``var = sumsq / count - mean^2`` over all regions' train rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.data._util import canonical_labels, log_transform, show, sort_labels
from fedglobal.data.regions import RegionTable, feature_columns, target_column
from fedglobal.data.schema import Schema
from fedglobal.errors import DataError

__all__ = ["LocalStats", "local_stats", "merge_stats"]

Metrics = dict[str, float | int]
Configs = dict[str, list[str] | str]


@dataclass(frozen=True)
class LocalStats:
    """Aggregate statistics of one region's train split (no rows).

    ``sums``, ``sumsqs`` and ``counts`` are per numeric feature, after the log
    transform of ``data.log_features``; ``counts`` count non-missing values.
    ``vocab`` holds the category values seen per categorical feature and
    ``labels`` the labels seen (classification), as canonical strings.
    ``target_*`` are the regression target's sum, sum of squares and count.
    """

    region: str
    n_rows: int
    features: list[str]
    sums: dict[str, float] = field(default_factory=dict)
    sumsqs: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    labels: list[str] | None = None
    target_sum: float | None = None
    target_sumsq: float | None = None
    target_count: int | None = None

    def to_records(self) -> tuple[Metrics, Configs]:
        """Flat Flower-friendly records: (scalar metrics, string / string-list configs).

        Metrics: ``n_rows``, ``sum/<col>``, ``sumsq/<col>``, ``count/<col>``,
        ``target_sum``, ``target_sumsq``, ``target_count``. Configs: ``region``,
        ``features``, ``vocab/<col>``, ``labels``.
        """
        metrics: Metrics = {"n_rows": int(self.n_rows)}
        for col in self.sums:
            metrics[f"sum/{col}"] = float(self.sums[col])
            metrics[f"sumsq/{col}"] = float(self.sumsqs[col])
            metrics[f"count/{col}"] = int(self.counts[col])
        if self.target_count is not None:
            metrics["target_sum"] = float(self.target_sum or 0.0)
            metrics["target_sumsq"] = float(self.target_sumsq or 0.0)
            metrics["target_count"] = int(self.target_count)
        configs: Configs = {"region": self.region, "features": list(self.features)}
        for col, values in self.vocab.items():
            configs[f"vocab/{col}"] = list(values)
        if self.labels is not None:
            configs["labels"] = list(self.labels)
        return metrics, configs

    @classmethod
    def from_records(cls, metrics: Metrics, configs: Configs) -> LocalStats:
        """Rebuild statistics from :meth:`to_records` output (e.g. a Flower reply)."""
        try:
            sums, sumsqs, counts, vocab = {}, {}, {}, {}
            for key, value in metrics.items():
                kind, _, col = key.partition("/")
                if kind == "sum" and col:
                    sums[col] = float(value)
                    sumsqs[col] = float(metrics[f"sumsq/{col}"])
                    counts[col] = int(metrics[f"count/{col}"])
            for key, value in configs.items():
                kind, _, col = key.partition("/")
                if kind == "vocab" and col:
                    vocab[col] = [str(v) for v in value]
            labels = configs.get("labels")
            has_target = "target_count" in metrics
            return cls(
                region=str(configs["region"]),
                n_rows=int(metrics["n_rows"]),
                features=[str(f) for f in configs["features"]],
                sums=sums,
                sumsqs=sumsqs,
                counts=counts,
                vocab=vocab,
                labels=[str(v) for v in labels] if labels is not None else None,
                target_sum=float(metrics["target_sum"]) if has_target else None,
                target_sumsq=float(metrics["target_sumsq"]) if has_target else None,
                target_count=int(metrics["target_count"]) if has_target else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed local statistics records: missing or bad {exc}") from None


def local_stats(table: RegionTable, cfg: ExperimentConfig) -> LocalStats:
    """Aggregate statistics of ``table.train`` (the test split is never used)."""
    train = table.train
    target = target_column(cfg)
    features = feature_columns(table, cfg)
    sums, sumsqs, counts, vocab = {}, {}, {}, {}
    for col in features:
        series = train[col]
        if pd.api.types.is_numeric_dtype(series):
            values = series.to_numpy(dtype=np.float64)
            if col in cfg.data.log_features:
                values = log_transform(values)
            sums[col], sumsqs[col], counts[col] = moments(values)
        else:
            vocab[col] = sorted(set(canonical_labels(series.dropna())))
    stats = LocalStats(
        region=table.region,
        n_rows=len(train),
        features=features,
        sums=sums,
        sumsqs=sumsqs,
        counts=counts,
        vocab=vocab,
    )
    y = train[target]
    if cfg.data.task == "classification":
        labels = sort_labels(canonical_labels(y.dropna()))
        return _replace(stats, labels=labels)
    t = pd.to_numeric(y, errors="coerce").to_numpy(dtype=np.float64)
    return with_target_moments(stats, t)


def moments(values: np.ndarray) -> tuple[float, float, int]:
    """Sum, sum of squares and count of the non-missing values of a float64 array.

    The one place these reductions happen, so statistics computed from a region's
    table (:func:`local_stats`) and from the source's columns
    (:func:`fedglobal.data.region_stats`) are equal to the last bit.
    """
    present = values[~np.isnan(values)]
    return float(present.sum()), float(np.square(present).sum()), int(present.size)


def with_target_moments(stats: LocalStats, target: np.ndarray) -> LocalStats:
    """``stats`` with the regression target's :func:`moments`."""
    total, squares, count = moments(target)
    return _replace(stats, target_sum=total, target_sumsq=squares, target_count=count)


def _replace(stats: LocalStats, **changes) -> LocalStats:
    import dataclasses

    return dataclasses.replace(stats, **changes)


def merge_stats(stats: Sequence[LocalStats], cfg: ExperimentConfig) -> Schema:
    """The global schema from every region's statistics (server side).

    Numeric column: ``mean = sum / count``, ``var = sumsq / count - mean^2``
    (a constant column, var ~ 0, gets var 1), imputed with the mean, and
    followed by a ``<col>__missing`` indicator if any region had a missing
    value. Categorical column: one-hot over the sorted union of values.
    Classification: classes are the sorted union of labels (at least two).
    Regression: the target's pooled mean and variance.
    """
    if not stats:
        raise DataError("merge_stats needs the statistics of at least one region")
    features = list(stats[0].features)
    for s in stats[1:]:
        if list(s.features) != features:
            raise DataError(
                f"regions {stats[0].region!r} and {s.region!r} have different feature columns: "
                f"{show(features)} vs {show(s.features)}"
            )
    names: list[str] = []
    mean: list[float] = []
    variance: list[float] = []
    numeric: list[str] = []
    impute: dict[str, float] = {}
    indicators: list[str] = []
    vocab: dict[str, list[str]] = {}
    for col in features:
        kind = _column_kind(col, stats)
        if kind == "numeric":
            total = sum(s.sums.get(col, 0.0) for s in stats)
            total_sq = sum(s.sumsqs.get(col, 0.0) for s in stats)
            count = sum(s.counts.get(col, 0) for s in stats)
            if count == 0:
                raise DataError(
                    f"feature {col!r}: all values missing in the train splits of every region"
                )
            m, v = _moments(total, total_sq, count)
            numeric.append(col)
            impute[col] = m
            names.append(col)
            mean.append(m)
            variance.append(v)
            if any(s.counts.get(col, 0) < s.n_rows for s in stats):
                indicators.append(col)
                names.append(f"{col}__missing")
                mean.append(0.0)
                variance.append(1.0)
        else:
            values = sorted(set().union(*(s.vocab.get(col, []) for s in stats)))
            if not values:
                raise DataError(
                    f"feature {col!r}: all values missing in the train splits of every region"
                )
            vocab[col] = values
            names.extend(f"{col}={v}" for v in values)
            mean.extend([0.0] * len(values))
            variance.extend([1.0] * len(values))

    classes = target_mean = target_variance = None
    if cfg.data.task == "classification":
        classes = sort_labels(label for s in stats for label in (s.labels or []))
        if len(classes) < 2:
            raise DataError(
                f"target {target_column(cfg)!r} has only {len(classes)} class(es) "
                f"({show(classes)}) over all regions: classification needs at least two"
            )
    else:
        count = sum(s.target_count or 0 for s in stats)
        if count == 0:
            raise DataError(f"target {target_column(cfg)!r} has no values in any region")
        target_mean, target_variance = _moments(
            sum(s.target_sum or 0.0 for s in stats),
            sum(s.target_sumsq or 0.0 for s in stats),
            count,
        )
    return Schema(
        feature_names=names,
        mean=mean,
        variance=variance,
        task=cfg.data.task,
        classes=classes,
        target_mean=target_mean,
        target_variance=target_variance,
        target=target_column(cfg),
        raw_features=features,
        numeric=numeric,
        impute=impute,
        indicators=indicators,
        vocab=vocab,
        log_features=[c for c in cfg.data.log_features if c in numeric],
    )


def _column_kind(col: str, stats: Sequence[LocalStats]) -> str:
    """``numeric`` or ``categorical``; a region whose column had no value at all
    (read as an all-missing numeric column) does not count as numeric."""
    numeric = [s.region for s in stats if col in s.sums and s.counts.get(col, 0) > 0]
    categorical = [s.region for s in stats if s.vocab.get(col)]
    if numeric and categorical:
        raise DataError(
            f"feature {col!r} is numeric in region(s) {show(numeric)} but categorical in "
            f"region(s) {show(categorical)}; make the column's type agree in every region"
        )
    if categorical:
        return "categorical"
    if any(col in s.sums for s in stats):
        return "numeric"
    return "categorical"


def _moments(total: float, total_sq: float, count: int) -> tuple[float, float]:
    """Mean and variance from sums; a variance that is zero up to rounding becomes 1.0."""
    m = total / count
    v = total_sq / count - m * m
    if not math.isfinite(v) or v <= max(1e-12, 1e-10 * m * m):
        v = 1.0  # a constant column: leave it unscaled, silently
    return m, v
