"""The global schema and encoding: :class:`Schema`, :func:`encode`, :class:`RegionArrays`.

A :class:`Schema` is built on the server by :func:`fedglobal.data.stats.merge_stats`
from every region's aggregate statistics (never rows), then sent to clients
as JSON. :func:`encode` turns a region's raw table into float32 arrays with
the same columns in every region. It does not standardise: the model does,
with a Normalization layer built from ``schema.mean`` and ``schema.variance``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import pandas as pd

from fedglobal.data._util import canonical_label, canonical_labels, log_transform, show
from fedglobal.data.regions import RegionTable
from fedglobal.errors import DataError

__all__ = ["RegionArrays", "Schema", "encode"]

_VERSION = 1


@dataclass(frozen=True)
class Schema:
    """The encoded feature columns, their global statistics, and what encoding needs.

    ``feature_names``, ``mean`` and ``variance`` are per encoded column, in
    order: for each raw feature, a numeric column ``<col>`` (followed by
    ``<col>__missing`` if any region had a missing value in its train split)
    or the one-hot columns ``<col>=<value>`` of the sorted vocabulary. One-hot
    and indicator columns have mean 0 and variance 1 (left as they are).
    Means and variances of numeric columns are after the log transform.
    """

    feature_names: list[str]
    mean: list[float]
    variance: list[float]
    task: Literal["regression", "classification"]
    classes: list[str] | None
    target_mean: float | None
    target_variance: float | None
    target: str
    raw_features: list[str]
    numeric: list[str]
    impute: dict[str, float] = field(default_factory=dict)
    indicators: list[str] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    log_features: list[str] = field(default_factory=list)

    @property
    def input_dim(self) -> int:
        """Number of encoded feature columns (the model's input width)."""
        return len(self.feature_names)

    @property
    def num_classes(self) -> int | None:
        """Number of classes for classification; ``None`` for regression."""
        return len(self.classes) if self.classes is not None else None

    def to_json(self) -> str:
        """The schema as JSON text (for a Flower ConfigRecord or a run folder).

        Computed once per schema object: caches key by it on every message, and
        for an image table (784 features) ``dataclasses.asdict``'s deep copy took
        about 1 s of a 10-round run (pyinstrument).
        """
        text = self.__dict__.get("_json")
        if text is None:
            values = {f.name: getattr(self, f.name) for f in fields(self)}
            text = json.dumps({"version": _VERSION, **values})
            object.__setattr__(self, "_json", text)
        return text

    @classmethod
    def from_json(cls, text: str) -> Schema:
        """Rebuild a schema written by :meth:`to_json`."""
        try:
            raw: dict[str, Any] = json.loads(text)
            raw.pop("version", None)
            return cls(**raw)
        except (json.JSONDecodeError, TypeError) as exc:
            raise DataError(f"not a fedglobal schema: {exc}") from None


@dataclass(frozen=True)
class RegionArrays:
    """A region's encoded arrays: x float32 ``(n, input_dim)``; y float32 ``(n, 1)``
    for regression or int32 class indices ``(n,)`` for classification."""

    region: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def encode(table: RegionTable, schema: Schema) -> RegionArrays:
    """Encode a region's train and test rows with the global schema.

    Numeric features: log transform (``data.log_features``), missing values
    replaced by the global mean, plus a 0/1 indicator column where the schema
    has one. Categorical features: one-hot over the schema's vocabulary; a
    missing or unseen category is all zeros. Not standardised.
    A label not in ``schema.classes`` is a DataError naming the region.
    """
    x_train, y_train = encode_split(table.train, schema, table.region, "train")
    x_test, y_test = encode_split(table.test, schema, table.region, "test")
    return RegionArrays(table.region, x_train, y_train, x_test, y_test)


def encode_split(
    frame: pd.DataFrame, schema: Schema, region: str, split: str
) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in [*schema.raw_features, schema.target] if c not in frame.columns]
    if missing:
        raise DataError(
            f"region {region!r} ({split}) lacks column(s) {show(missing)} of the schema "
            f"(its columns: {show(list(frame.columns))})"
        )
    n = len(frame)
    x = np.zeros((n, schema.input_dim), dtype=np.float32)
    position = {name: i for i, name in enumerate(schema.feature_names)}
    numeric = set(schema.numeric)
    indicators = set(schema.indicators)
    # Columns already of a numeric dtype are read in one block (no coercion needed,
    # nothing can be non-numeric): per-column pandas calls dominated at 10,000 regions.
    typed = [c for c in schema.raw_features if c in numeric and _numeric_dtype(frame[c])]
    block = frame[typed].to_numpy(dtype=np.float64, na_value=np.nan) if typed else None
    column_of = {c: j for j, c in enumerate(typed)}
    for col in schema.raw_features:
        if col in numeric:
            if col in column_of:
                values = block[:, column_of[col]]
            else:
                series = frame[col]
                values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64)
                bad = series.notna().to_numpy() & np.isnan(values)
                if bad.any():
                    raise DataError(
                        f"region {region!r} ({split}): numeric feature {col!r} has "
                        f"non-numeric values such as {show(series[bad].unique().tolist()[:5])}"
                    )
            if col in schema.log_features:
                values = log_transform(values)
            nan = np.isnan(values)
            x[:, position[col]] = np.where(nan, schema.impute[col], values)
            if col in indicators:
                x[:, position[f"{col}__missing"]] = nan
        elif schema.vocab[col]:
            codes = _codes(frame[col], schema.vocab[col])
            rows = np.flatnonzero(codes >= 0)
            x[rows, position[f"{col}={schema.vocab[col][0]}"] + codes[rows]] = 1.0
    return x, _encode_target(frame[schema.target], schema, region, split)


def _encode_target(series: pd.Series, schema: Schema, region: str, split: str) -> np.ndarray:
    if schema.task == "regression":
        y = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float32)
        if np.isnan(y).any():
            raise DataError(
                f"region {region!r} ({split}): target {schema.target!r} has missing "
                "or non-numeric values"
            )
        return y.reshape(-1, 1)
    assert schema.classes is not None
    codes = _codes(series, schema.classes)
    unknown = codes < 0
    if unknown.any():
        label = canonical_label(series.iloc[int(np.flatnonzero(unknown)[0])])
        raise DataError(
            f"region {region!r} ({split}): label {label!r} of target {schema.target!r} is "
            f"not a known class (known classes: {show(schema.classes)})"
        )
    return codes.astype(np.int32)


def _numeric_dtype(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and series.dtype != object


def _codes(series: pd.Series, categories: list[str]) -> np.ndarray:
    """Index of each value's canonical string in ``categories``; -1 if missing or unseen."""
    labels = np.array(canonical_labels(series), dtype=object)  # a copy: written below
    labels[series.isna().to_numpy()] = None
    return np.asarray(pd.Categorical(labels, categories=categories).codes, dtype=np.int64)
