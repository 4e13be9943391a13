"""A region's encoded arrays and statistics, fast: :func:`encode_region`, :func:`region_stats`.

In a simulation every region of ``data.source`` lives in the same process table
(:func:`fedglobal.data.regions.load_region` reads it once and slices it). Encoding
each sampled region with pandas cost about 30 ms of per-call overhead for 200
rows, more than training it, and at 10,000 regions that made the round time grow
with the number of regions seen rather than sampled. Here the whole table is
encoded once per process and schema, in one vectorised pass, and a region's arrays
are its rows of that result, split by the same (seed, region) positions as
:func:`~fedglobal.data.load_region`.

Encoding is row-wise (global imputation values, vocabularies and classes from the
federated schema), so the arrays are identical to
``encode(load_region(cfg, region), schema)``; a test checks it. If the whole
table cannot be encoded (a non-numeric value, an unknown label), every region
falls back to the per-region path, whose error names the region at fault.
A region's own file (``data_path``, deployment) always takes the per-region path.

The start-up statistics have the same problem: ``local_stats(load_region(...))``
builds two DataFrames per region, about 2.7 ms of pandas overhead for 200 rows,
27 s at 10,000 regions. :func:`region_stats` computes the same numbers from the
prepared source's columns, sliced by the region's train positions, with the same
numpy reductions on the same values in the same order, so the results are equal
(tested), not merely close.

With ``data.storage = "disk"`` (:mod:`fedglobal.data.ondisk`) both work on the
store's files instead: the whole-source encoding is written to two more files in
region order, and a region's statistics and arrays are its block of rows, read
when the region is sampled.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.data._util import canonical_labels, log_transform, sort_labels
from fedglobal.data.cleaning import Prepared
from fedglobal.data.regions import (
    cached,
    load_region,
    prepared_source,
    reads_whole_source,
    split_positions,
)
from fedglobal.data.schema import RegionArrays, Schema, encode, encode_split
from fedglobal.data.stats import LocalStats, local_stats, moments, with_target_moments
from fedglobal.errors import DataError

__all__ = ["encode_region", "region_stats"]

#: Rows encoded at a time when the whole source is encoded (bounds the temporaries).
ENCODE_CHUNK_ROWS = 65_536


def encode_region(
    cfg: ExperimentConfig, region: str, schema: Schema, *, data_path: str | None = None
) -> RegionArrays:
    """``encode(load_region(cfg, region, data_path=data_path), schema)``, sliced from a
    once-per-process encoding of the whole source when the region comes from it."""
    if data_path is None and reads_whole_source(cfg):
        prepared = prepared_source(cfg)
        whole = _encoded_source(prepared, schema)
        if whole is not None and region in prepared.groups:
            x, y = prepared.region_rows(region, whole)
            train, test = split_positions(len(x), region, cfg)
            return RegionArrays(region, x[train], y[train], x[test], y[test])
    return encode(load_region(cfg, region, data_path=data_path), schema)


def _encoded_source(prepared: Prepared, schema: Schema) -> tuple | None:
    """``(x, y)`` of every row of the prepared source, or None if some row cannot be
    encoded (cached with the prepared sources, :func:`fedglobal.data.regions.cached`)."""

    def build() -> tuple | None:
        n, store = prepared.n_rows, prepared.store
        try:
            # In chunks of rows: encoding is row by row, and a whole-table pass held a
            # float64 copy of every numeric column (320 MB at 10,000 regions) at once.
            x = y = None
            for start in range(0, n, ENCODE_CHUNK_ROWS):
                rows = prepared.rows(np.arange(start, min(start + ENCODE_CHUNK_ROWS, n)))
                xc, yc = encode_split(rows, schema, "(every region)", "all")
                if store is not None:  # data.storage = "disk": files, in region order
                    if x is None:
                        x, y = (
                            store.new_file(xc.dtype, xc.shape[1:]),
                            store.new_file(yc.dtype, yc.shape[1:]),
                        )
                    x.append(xc)
                    y.append(yc)
                    continue
                if x is None:  # the widths are known once the first chunk is encoded
                    x = np.empty((n, *xc.shape[1:]), xc.dtype)
                    y = np.empty((n, *yc.shape[1:]), yc.dtype)
                x[start : start + len(xc)], y[start : start + len(yc)] = xc, yc
            return x, y
        except DataError:
            return None  # the per-region path will name the region at fault

    return cached(prepared, ("encoded", schema.to_json()), build)


def region_stats(cfg: ExperimentConfig, region: str, *, data_path: str | None = None) -> LocalStats:
    """``local_stats(load_region(cfg, region, data_path=data_path), cfg)``, computed from
    the prepared source's columns when the region comes from it (no DataFrames)."""
    if data_path is None and reads_whole_source(cfg):
        prepared = prepared_source(cfg)
        group = prepared.groups.get(region)
        if group is not None and prepared.target not in prepared.features:
            train_pos, _ = split_positions(len(group), region, cfg)
            if prepared.store is not None:  # data.storage = "disk": the region's block
                start, stop = group[0], group[-1] + 1
                block = prepared.store.stat_columns(prepared.features, prepared.target, start, stop)
                return _sliced_stats(block, prepared.features, train_pos, region, cfg)
            columns = _stat_columns(prepared, cfg)
            return _sliced_stats(columns, prepared.features, group[train_pos], region, cfg)
    return local_stats(load_region(cfg, region, data_path=data_path), cfg)


def _stat_columns(prepared: Prepared, cfg: ExperimentConfig) -> dict:
    """Per-process arrays :func:`local_stats` reads, for every row of the source:
    the numeric features' values (the table's own arrays: float32 or float64, widened
    to float64 region by region, as local_stats does), canonical labels (and presence) of the
    categorical ones, and the target's label codes or float64 values."""

    def build() -> dict:
        frame = prepared.frame
        numeric, categorical = {}, {}
        for col in prepared.features:
            series = frame[col]
            if pd.api.types.is_numeric_dtype(series):
                numeric[col] = series.to_numpy()  # float32 or float64, not copied
            else:
                present = series.notna().to_numpy()
                labels = np.full(len(series), None, dtype=object)
                labels[present] = canonical_labels(series[present]).to_numpy(dtype=object)
                categorical[col] = (labels, present)
        y = frame[prepared.target]
        if cfg.data.task == "classification":
            codes, names = pd.factorize(canonical_labels(y))
            target = (codes, np.asarray(names, dtype=object))
        else:
            target = pd.to_numeric(y, errors="coerce").to_numpy(dtype=np.float64)
        return {"numeric": numeric, "categorical": categorical, "target": target}

    return cached(prepared, ("stat-columns", cfg.data.task), build)


def _sliced_stats(
    columns: dict, features: list[str], rows: np.ndarray, region: str, cfg: ExperimentConfig
) -> LocalStats:
    """:func:`local_stats` of the rows ``rows`` (a region's train split), step by step."""
    sums, sumsqs, counts, vocab = {}, {}, {}, {}
    for col, all_values in columns["numeric"].items():
        values = all_values[rows].astype(np.float64, copy=False)
        if col in cfg.data.log_features:
            values = log_transform(values)
        sums[col], sumsqs[col], counts[col] = moments(values)
    for col, (labels, present) in columns["categorical"].items():
        vocab[col] = sorted(set(labels[rows][present[rows]]))
    stats = LocalStats(
        region=region,
        n_rows=len(rows),
        features=list(features),
        sums=sums,
        sumsqs=sumsqs,
        counts=counts,
        vocab=vocab,
    )
    target = columns["target"]
    if cfg.data.task == "classification":
        codes, names = target
        seen = np.unique(codes[rows])
        return dataclasses.replace(stats, labels=sort_labels(names[seen[seen >= 0]]))
    return with_target_moments(stats, target[rows])
