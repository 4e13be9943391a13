"""A region's encoded arrays, fast: :func:`encode_region`.

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
"""

from __future__ import annotations

from fedglobal.config import ExperimentConfig
from fedglobal.data.regions import _cached, _Prepared, _prepared_source, _split, load_region
from fedglobal.data.schema import RegionArrays, Schema, _encode_split, encode
from fedglobal.errors import DataError

__all__ = ["encode_region"]


def encode_region(
    cfg: ExperimentConfig, region: str, schema: Schema, *, data_path: str | None = None
) -> RegionArrays:
    """``encode(load_region(cfg, region, data_path=data_path), schema)``, sliced from a
    once-per-process encoding of the whole source when the region comes from it."""
    if data_path is None:
        prepared = _prepared_source(cfg)
        whole = _encoded_source(prepared, schema)
        group = prepared.groups.get(region)
        if whole is not None and group is not None:
            x, y = whole
            train_pos, test_pos = _split(len(group), region, cfg)
            train, test = group[train_pos], group[test_pos]
            return RegionArrays(region, x[train], y[train], x[test], y[test])
    return encode(load_region(cfg, region, data_path=data_path), schema)


def _encoded_source(prepared: _Prepared, schema: Schema) -> tuple | None:
    """``(x, y)`` of every row of the prepared source, or None if some row cannot be
    encoded (cached with the prepared sources, :func:`fedglobal.data.regions._cached`)."""

    def build() -> tuple | None:
        try:
            return _encode_split(prepared.frame, schema, "(every region)", "all")
        except DataError:
            return None  # the per-region path will name the region at fault

    return _cached(prepared, ("encoded", schema.to_json()), build)
