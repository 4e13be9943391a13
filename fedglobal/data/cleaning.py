"""How a source's rows and columns are cleaned, and its regions formed: the policies
that the in-memory path (:mod:`fedglobal.data.regions`) and the out-of-core path
(:mod:`fedglobal.data.ondisk`) share, so that both give the same rows and errors.

- **Columns** (:func:`select_columns`): the region, target and feature columns, with
  the errors for a missing one.
- **Rows** (:func:`filter_rows`, :func:`clean_rows`): rows without a region or a
  target dropped, the target checked; each feature cleaned (:func:`clean_feature`),
  then ``missing = "drop"``.
- **Regions** (:func:`assign_regions`, :func:`apply_rare_policy`): which rows each
  region holds, and the rare regions left out or reported.
- **Errors**: the :class:`~fedglobal.errors.DataError` of each policy, built in one
  place so that both paths word them alike.

The policies themselves are described in :mod:`fedglobal.data.regions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.data import synthetic
from fedglobal.data._util import canonical_label, canonical_labels, show, sort_labels, suggest
from fedglobal.data.partition import (
    dirichlet_partition,
    iid_partition,
    region_names,
    shards_partition,
)
from fedglobal.errors import DataError

if TYPE_CHECKING:
    from fedglobal.data.ondisk import ColumnStore

__all__ = [
    "Prepared",
    "all_missing_error",
    "apply_rare_policy",
    "assign_regions",
    "check_classes",
    "clean_feature",
    "clean_rows",
    "filter_rows",
    "no_target_error",
    "non_numeric_error",
    "numbers_as_text",
    "region_column",
    "select_columns",
    "target_column",
]

_INDEX_COLUMNS = ("rownames",)


@dataclass(frozen=True)
class Prepared:
    """A source cleaned and split into regions: the rows (in memory, or in a
    :class:`~fedglobal.data.ondisk.ColumnStore` on disk) and each kept region's rows."""

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


def target_column(cfg: ExperimentConfig) -> str:
    """The target column: ``data.target``, or ``y`` for ``synthetic:fedprox``."""
    if cfg.data.target:
        return cfg.data.target
    if cfg.data.source.startswith("synthetic:"):
        return synthetic.TARGET
    raise DataError("data.target is not set: name the column to predict")


def region_column(cfg: ExperimentConfig) -> str | None:
    """The region column: ``data.region``, ``device`` for ``synthetic:fedprox``, else None."""
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


def select_columns(
    raw: pd.DataFrame, cfg: ExperimentConfig, origin: str, local: bool
) -> tuple[str | None, str, list[str]]:
    """``(region column or None, target, features)`` of ``raw`` (read from ``origin``);
    a missing column is a DataError naming it. ``local``: a region's own file, which
    may lack the region column."""
    available = [str(c) for c in raw.columns]
    data = cfg.data
    region_col = region_column(cfg)
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


def filter_rows(
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


def clean_rows(
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
        frame[col] = clean_feature(
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


def check_classes(labels: list[str], target: str, origin: str) -> None:
    """A DataError unless the target has at least two classes (``labels``)."""
    if len(labels) < 2:
        raise DataError(
            f"target {target!r} has only one class ({show(labels)}) in {origin}: "
            "classification needs at least two"
        )


def apply_rare_policy(
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
        raise no_target_error(target, origin)
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


def clean_feature(
    col: pd.Series,
    name: str,
    cfg: ExperimentConfig,
    origin: str,
    *,
    check_all_missing: bool,
    as_numbers: bool | None = None,
) -> pd.Series:
    """Feature ``name`` cleaned: numbers as float64 (float32 kept), numbers stored as
    text as float64 (``as_numbers``: the whole column's decision, when ``col`` is a
    batch of it), other text as canonical labels or a DataError; infinities and
    (``check_all_missing``) a column without values are DataErrors."""
    if check_all_missing and len(col) and col.isna().all():
        raise all_missing_error(name, origin)
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_numeric_dtype(col):
        values = col if col.dtype == np.float32 else col.astype(np.float64)
    else:
        converted = pd.to_numeric(col, errors="coerce")
        if as_numbers is None:
            as_numbers = numbers_as_text(col, converted) == (True, True)
        if as_numbers:
            values = converted.astype(np.float64)  # numbers stored as text
        elif cfg.data.categorical == "error" or name in cfg.data.log_features:
            raise non_numeric_error(name, col[col.notna() & converted.isna()], cfg)
        else:
            strings = [None if pd.isna(v) else canonical_label(v) for v in col.tolist()]
            return pd.Series(strings, index=col.index, dtype=object, name=name)
    if np.isinf(values.to_numpy()).any():
        raise DataError(
            f"feature {name!r} has infinite values in {origin}; replace them (e.g. by missing)"
        )
    return values


def no_target_error(target: str, origin: str) -> DataError:
    """The error for a target column without any value."""
    return DataError(f"target {target!r} has no values in {origin}")


def all_missing_error(name: str, origin: str) -> DataError:
    """The error for a feature column without any value."""
    return DataError(
        f"feature {name!r}: all values missing in {origin}; remove it from data.features"
    )


def non_numeric_error(name: str, bad: pd.Series, cfg: ExperimentConfig) -> DataError:
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


def numbers_as_text(col: pd.Series, converted: pd.Series) -> tuple[bool, bool]:
    """``(every present value of the text column is a number, some value is present)``:
    both true over the whole column, and it is read as numbers."""
    return bool(converted.notna().sum() == col.notna().sum()), bool(col.notna().any())


def assign_regions(
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
