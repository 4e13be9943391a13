"""Out-of-core sources (``data.storage = "disk"``): a Parquet file cleaned row group by
row group into column files sorted by region, then read one region at a time.

In memory (:func:`fedglobal.data.regions._prepare`) every process that trains holds
the whole cleaned table and its encoding, so its memory grows with the total number
of rows, not with the clients a round samples (at 10,000 regions of 200 rows and 20
features: 343 MB, and a 193 MB Parquet read peaked at +513 MB). Here the file is
read one row group and one column at a time (pyarrow decodes whole row groups,
even in its batch readers):

1. Only if the whole table decides something a row group cannot: a text feature
   is read as numbers only if every value of the column is a number. This pass
   reads the target, region and text columns and makes those decisions.
2. Each row group's target and region columns are filtered and cleaned by the
   in-memory path's own steps (:mod:`fedglobal.data.cleaning`: ``filter_rows``),
   then each feature column by ``clean_feature``, with the whole file's dtypes (an
   integer column with a missing value anywhere is float64, as ``pd.read_parquet``
   makes it), and
   appended to one file per column; text columns are stored as int32 codes into
   a vocabulary. ``missing = "drop"`` marks rows instead of removing them.
3. Regions are assigned as in memory (the same partition functions on the same
   values, over the rows kept) and each column file is rewritten in region order,
   one column in memory at a time. A region's rows are then one contiguous block
   per column, read with one ``pread``; nothing of the data stays mapped in the
   process.

What grows with the total number of rows is the indexes, during preparation: an
int32 region code, a label code and a keep flag per row, and the int64 sort order.

The rows, statistics and encodings equal the in-memory path's to the last bit (a
test compares them on several tables). Arrow types read this way: integers,
floats, booleans without missing values, strings; other columns (dates,
dictionaries, nested) need ``data.storage = "memory"``. The files live in a
temporary folder removed when the process exits (or the store is dropped).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.data._util import canonical_labels
from fedglobal.data.cleaning import (
    Prepared,
    all_missing_error,
    apply_rare_policy,
    assign_regions,
    check_classes,
    clean_feature,
    filter_rows,
    no_target_error,
    non_numeric_error,
    numbers_as_text,
    select_columns,
)
from fedglobal.data.sources import PARQUET_MAGIC, file_head, parse_source
from fedglobal.errors import DataError

__all__ = ["AUTO_DISK_BYTES", "ColumnStore", "out_of_core_path", "prepare_parquet"]

log = logging.getLogger(__name__)

#: ``data.storage = "auto"`` reads a Parquet file out of core from this size on.
AUTO_DISK_BYTES = 64 * 2**20

_open_lock = threading.Lock()
_LABELS = "\0labels"  # the store's column of the target's canonical label codes


# -- choosing ------------------------------------------------------------------


def out_of_core_path(cfg: ExperimentConfig) -> Path | None:
    """The Parquet file to read out of core under ``data.storage``, or None (memory).

    ``"disk"`` needs a ``parquet:`` source (DataError otherwise); ``"auto"`` chooses
    disk for Parquet files of :data:`AUTO_DISK_BYTES` or more whose columns it can
    read out of core, and says so in the log."""
    storage = cfg.data.storage
    if storage == "memory":
        return None
    spec = parse_source(cfg.data.source)
    if spec.scheme != "parquet":
        if storage == "disk":
            raise DataError(
                f"data.storage = 'disk' reads parquet: sources only, and data.source is "
                f"{cfg.data.source!r}; write the table to Parquet, or set data.storage = "
                "'memory' (or 'auto')"
            )
        return None
    path = cfg.resolve_path(spec.location).resolve()
    if path.is_dir() and storage == "disk":
        raise DataError(
            f"data.storage = 'disk' converts one Parquet file, and {str(path)!r} is a folder "
            "(a partitioned dataset, read per partition already): set data.storage = 'auto' "
            "or 'memory'"
        )
    if not path.is_file() or file_head(path, 4) != PARQUET_MAGIC:
        return None  # reading it in memory raises the clear error
    size = path.stat().st_size
    if storage == "auto" and size < AUTO_DISK_BYTES:
        return None
    unreadable = _unsupported_columns(path, cfg)
    if unreadable:
        listing = ", ".join(f"{name!r} ({kind})" for name, kind in unreadable.items())
        if storage == "disk":
            raise DataError(
                f"data.storage = 'disk' cannot read column(s) {listing} of {str(path)!r} "
                "out of core (it reads integers, floats, booleans without missing values and "
                "strings); drop them from data.features, or set data.storage = 'memory'"
            )
        log.info("data.storage = auto: %s in memory (columns %s)", path.name, listing)
        return None
    if storage == "auto":
        log.info("data.storage = auto: %s is %.0f MB, read out of core", path.name, size / 2**20)
    return path


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{str(path)!r} is not a readable Parquet file: {exc}") from None


def _used_columns(path: Path, cfg: ExperimentConfig) -> tuple[str | None, str, list[str]]:
    """``(region column, target, features)`` as the in-memory path selects them."""
    empty = _parquet_file(path).schema_arrow.empty_table().to_pandas()
    empty.columns = [str(c) for c in empty.columns]
    return select_columns(empty, cfg, cfg.data.source, False)


def _unsupported_columns(path: Path, cfg: ExperimentConfig) -> dict[str, str]:
    import pyarrow as pa

    region_col, target, features = _used_columns(path, cfg)
    pf = _parquet_file(path)
    schema = pf.schema_arrow
    out = {}
    for name in [c for c in (region_col, target, *features) if c is not None]:
        kind = schema.field(name).type
        readable = (
            pa.types.is_integer(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
            or (pa.types.is_boolean(kind) and _null_count(pf, name) == 0)
        )
        if not readable:
            out[name] = "boolean with missing values" if pa.types.is_boolean(kind) else str(kind)
    return out


def _null_count(pf: Any, name: str) -> int:
    """Missing values in column ``name`` of the open Parquet file ``pf``: from the file's
    statistics, else by reading the column."""
    meta = pf.metadata
    leaf = [meta.schema.column(j).path for j in range(meta.num_columns)].index(name)
    total = 0
    for g in range(meta.num_row_groups):
        stats = meta.row_group(g).column(leaf).statistics
        if stats is None or not stats.has_null_count:
            return int(pf.read(columns=[name]).column(0).null_count)
        total += stats.null_count
    return total


# -- files -------------------------------------------------------------------------


@dataclass
class _ArrayFile:
    """Rows of one dtype and row shape, appended to a file and read back by range."""

    path: Path
    dtype: np.dtype
    row_shape: tuple[int, ...] = ()
    rows: int = 0
    _fd: int | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.row_bytes = self.dtype.itemsize * math.prod(self.row_shape)

    def append(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        with open(self.path, "ab") as fh:
            fh.write(values.tobytes())
        self.rows += len(values)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` to ``stop`` (read-only; one ``pread``, thread-safe)."""
        if self._fd is None:
            with _open_lock:  # regions may be read from several threads
                if self._fd is None:
                    fd = os.open(self.path, os.O_RDONLY)
                    weakref.finalize(self, os.close, fd)
                    self._fd = fd
        size = (stop - start) * self.row_bytes
        data = os.pread(self._fd, size, start * self.row_bytes)
        if len(data) != size:
            raise DataError(f"{self.path} was truncated: its rows {start}-{stop} are gone")
        return np.frombuffer(data, self.dtype).reshape(-1, *self.row_shape)

    def __getitem__(self, rows: slice) -> np.ndarray:
        """``file[start:stop]``, as for an array."""
        return self.read(rows.start, rows.stop)

    def reorder(self, order: np.ndarray) -> None:
        """Rewrite the file with its rows in ``order`` (only this file in memory)."""
        values = np.fromfile(self.path, self.dtype).reshape(-1, *self.row_shape)[order]
        values.tofile(self.path)
        self.rows = len(values)


@dataclass
class _Vocabulary:
    """Codes of values seen batch after batch (-1 for missing), and their values."""

    codes: dict[tuple[type, Any], int] = field(default_factory=dict)
    values: list[Any] = field(default_factory=list)
    _table: np.ndarray | None = field(default=None, repr=False)

    def encode(self, series: pd.Series) -> np.ndarray:
        local, uniques = pd.factorize(series)
        mapping = np.empty(len(uniques) + 1, np.int32)
        for k, value in enumerate(uniques):
            key = (type(value), value)  # True and 1 hash alike
            if key not in self.codes:
                self.codes[key] = len(self.values)
                self.values.append(value)
            mapping[k] = self.codes[key]
        mapping[-1] = -1  # factorize's -1 (missing) picks the last entry
        return mapping[local]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Values of ``codes`` (an object array; missing is None)."""
        if self._table is None or len(self._table) != len(self.values) + 1:
            self._table = np.array([*self.values, None], dtype=object)
        return self._table[codes]


@dataclass
class _Column:
    file: _ArrayFile
    pandas_dtype: Any  # the dtype the in-memory frame has
    vocab: _Vocabulary | None = None  # text columns: file holds codes


class ColumnStore:
    """The cleaned rows of a source on disk, one file per column, sorted by region."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.columns: dict[str, _Column] = {}
        self._files = 0
        owner = os.getpid()  # a forked child must not remove its parent's files
        self._cleanup = weakref.finalize(self, _remove_folder, folder, owner)

    def new_file(self, dtype: Any, row_shape: tuple[int, ...] = ()) -> _ArrayFile:
        """A new empty file of rows in the store's folder."""
        self._files += 1
        return _ArrayFile(self.folder / f"{self._files:04d}.bin", np.dtype(dtype), row_shape)

    def append(self, name: str, series: pd.Series) -> None:
        """Append a batch of column ``name`` (the first batch fixes how it is stored)."""
        column = self.columns.get(name)
        if column is None:
            numeric = isinstance(series.dtype, np.dtype) and series.dtype.kind in "biuf"
            dtype = series.dtype if numeric else np.int32
            vocab = None if numeric else _Vocabulary()
            column = self.columns[name] = _Column(self.new_file(dtype), series.dtype, vocab)
        if series.dtype != column.pandas_dtype:
            raise AssertionError(f"column {name!r}: batch dtype {series.dtype}, not {column}")
        values = series.to_numpy() if column.vocab is None else column.vocab.encode(series)
        column.file.append(values)

    def block(self, name: str, start: int, stop: int) -> np.ndarray:
        """Stored rows ``start``-``stop`` of ``name``: values, or codes of a text column."""
        return self.columns[name].file.read(start, stop)

    def stat_columns(self, features: list[str], target: str, start: int, stop: int) -> dict:
        """Rows ``start``-``stop`` in the layout of
        :func:`fedglobal.data.encoded._stat_columns`."""
        numeric, categorical = {}, {}
        for col in features:
            codes = self.block(col, start, stop)
            vocab = self.columns[col].vocab
            if vocab is None:
                numeric[col] = codes
            else:
                categorical[col] = (vocab.decode(codes), codes >= 0)
        labels = self.columns.get(_LABELS)
        if labels is not None:
            assert labels.vocab is not None
            names = labels.vocab.decode(np.arange(len(labels.vocab.values)))
            return {
                "numeric": numeric,
                "categorical": categorical,
                "target": (self.block(_LABELS, start, stop), names),
            }
        target_values = self.block(target, start, stop).astype(np.float64)
        return {"numeric": numeric, "categorical": categorical, "target": target_values}

    def series(self, name: str, positions: np.ndarray) -> pd.Series:
        """Column ``name`` at ascending ``positions``, with its in-memory dtype."""
        column = self.columns[name]
        start = int(positions[0]) if len(positions) else 0
        stop = int(positions[-1]) + 1 if len(positions) else 0
        values = column.file.read(start, stop)[positions - start]
        if column.vocab is not None:
            values = column.vocab.decode(values)
        return pd.Series(values, dtype=column.pandas_dtype, name=name)

    def rows(self, positions: np.ndarray, names: list[str]) -> pd.DataFrame:
        return pd.DataFrame({name: self.series(name, positions) for name in names})


def _remove_folder(folder: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


class _Blocks(Mapping):
    """``{region: its row positions}`` for regions stored as consecutive blocks
    (``np.arange`` made on access: nothing per row is held)."""

    def __init__(self, names: list[str], bounds: np.ndarray) -> None:
        self._index = {name: k for k, name in enumerate(names)}
        self.bounds = bounds

    def span(self, region: str) -> tuple[int, int]:
        k = self._index[region]
        return int(self.bounds[k]), int(self.bounds[k + 1])

    def __getitem__(self, region: str) -> np.ndarray:
        return np.arange(*self.span(region))

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)


# -- preparing ---------------------------------------------------------------------


def prepare_parquet(path: Path, cfg: ExperimentConfig) -> Prepared:
    """The Parquet source at ``path`` cleaned into a :class:`ColumnStore`: the same
    regions, rows and errors as :func:`fedglobal.data.regions._prepare` of the file."""
    origin = cfg.data.source
    region_col, target, features = _used_columns(path, cfg)
    keys = [c for c in (target, region_col) if c is not None]
    dtypes = _whole_file_dtypes(path, [*dict.fromkeys([*features, *keys])])
    if cfg.data.task == "regression" and not _is_number_dtype(dtypes[target]):
        # the error lists the first bad values of the whole column: read it (only it)
        filter_rows(pd.read_parquet(path, columns=keys), cfg, origin, region_col, target, [], None)
    text = [c for c in features if not _is_number_dtype(dtypes[c])]
    as_numbers = _text_decisions(path, cfg, keys, text, dtypes) if text else {}

    store = ColumnStore(Path(tempfile.mkdtemp(prefix="fedglobal-data-")))
    region_vocab = _Vocabulary()
    region_codes, keep_parts = [], []
    present, n_targets = dict.fromkeys(features, False), 0
    for read in _row_groups(path, dtypes):
        frame, regions = filter_rows(
            read(keys), cfg, origin, region_col, target, [], None, batch=True
        )
        n_targets += len(frame)
        keep = np.ones(len(frame), dtype=bool)
        for col in features:  # one column in memory at a time
            raw = read([col])[col].loc[frame.index]
            present[col] = present[col] or bool(raw.notna().any())
            cleaned = clean_feature(
                raw, col, cfg, origin, check_all_missing=False, as_numbers=as_numbers.get(col)
            )
            if cfg.data.missing == "drop":
                keep &= cleaned.notna().to_numpy()
            store.append(col, cleaned)
        keep_parts.append(keep)
        store.append(target, frame[target])
        if regions is not None and cfg.data.partition == "column":
            region_codes.append(region_vocab.encode(regions.loc[frame.index]))
        if cfg.data.task == "classification":
            store.append(_LABELS, canonical_labels(frame[target]).astype(object))
    if n_targets == 0:
        raise no_target_error(target, origin)
    for col in features:
        if not present[col]:
            raise all_missing_error(col, origin)
    kept = np.flatnonzero(np.concatenate(keep_parts))  # stored rows left after the drops
    del keep_parts
    if len(kept) == 0:
        raise DataError(f"{origin}: no rows left after dropping rows with missing values")
    label_codes = label_vocab = None
    if cfg.data.task == "classification":
        label_codes = store.block(_LABELS, 0, n_targets)[kept]
        label_vocab = store.columns[_LABELS].vocab
        assert label_vocab is not None
        labels = label_vocab.decode(pd.unique(label_codes))  # in order of appearance
        check_classes([str(v) for v in labels], target, origin)
    codes = None
    if region_codes:
        found = np.concatenate(region_codes)[kept]
        del region_codes
        seen = np.unique(found)  # regions whose rows were all dropped do not exist
        names = sorted(str(region_vocab.values[k]) for k in seen)
        where = {name: k for k, name in enumerate(names)}
        rank = np.full(len(region_vocab.values) + 1, -1, np.int64)
        rank[seen] = [where[str(region_vocab.values[k])] for k in seen]
        codes = (rank[found], names)
        del found

    def row_labels() -> np.ndarray:  # Dirichlet partitions (classification only)
        assert label_vocab is not None and label_codes is not None
        return label_vocab.decode(label_codes)

    groups = assign_regions(len(kept), row_labels, codes, cfg, None)
    del codes
    label_codes = None  # freed before the files are sorted
    groups, rare = apply_rare_policy(groups, cfg, origin)
    order = kept[np.concatenate(list(groups.values()))]  # stored row of each sorted row
    bounds = np.concatenate([[0], np.cumsum([len(pos) for pos in groups.values()])])
    names = list(groups)
    del groups
    for column in store.columns.values():
        column.file.reorder(order)
    return Prepared(None, features, target, _Blocks(names, bounds), rare, store)


def _is_number_dtype(dtype: Any) -> bool:
    """Whether a feature of this dtype is cleaned as numbers (not as text)."""
    return pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype)


def _whole_file_dtypes(path: Path, used: list[str]) -> dict[str, Any]:
    """The dtype ``pd.read_parquet`` gives each column of the whole file: a batch of an
    integer column without missing values is int64, the whole column float64 if any
    value is missing."""
    pf = _parquet_file(path)
    if pf.metadata.num_rows == 0:
        raise DataError(f"data file {str(path)!r} has a header but no rows")
    empty = pf.schema_arrow.empty_table().select(used).to_pandas()
    dtypes = {}
    for name in used:
        dtypes[name] = empty[name].dtype  # with pandas' metadata (e.g. Int64) if any
        numpy_int = isinstance(dtypes[name], np.dtype) and dtypes[name].kind in "iu"
        if numpy_int and _null_count(pf, name):
            dtypes[name] = np.dtype(np.float64)
    return dtypes


def _row_groups(
    path: Path, dtypes: dict[str, Any]
) -> Iterator[Callable[[list[str]], pd.DataFrame]]:
    """For each row group of the file, ``read(columns)``: those columns of it in pandas,
    with the whole file's dtypes. pyarrow decodes a row group at a time (its batch
    readers too), so reading one column of it at a time bounds the memory."""
    pf = _parquet_file(path)

    def reader(group: int) -> Callable[[list[str]], pd.DataFrame]:
        def read(columns: list[str]) -> pd.DataFrame:
            try:
                frame = pf.read_row_group(group, columns=columns).to_pandas()
            except OSError as exc:  # pyarrow's errors for a corrupt file derive from it
                raise DataError(f"{str(path)!r} is not a readable Parquet file: {exc}") from None
            for name in columns:
                if frame[name].dtype != dtypes[name]:
                    frame[name] = frame[name].astype(dtypes[name])
            return frame

        return read

    for group in range(pf.metadata.num_row_groups):
        yield reader(group)


def _text_decisions(
    path: Path, cfg: ExperimentConfig, keys: list[str], text: list[str], dtypes: dict[str, Any]
) -> dict[str, bool]:
    """``{text feature: read as numbers}``, decided over the whole column as in memory
    (and its errors: no target at all, a column with no value, non-numbers where
    numbers are needed). ``keys``: the target and the region column, if any."""
    origin, target = cfg.data.source, keys[0]
    region_col = keys[1] if len(keys) > 1 else None
    numbers, present = dict.fromkeys(text, True), dict.fromkeys(text, False)
    bad: dict[str, list[Any]] = {col: [] for col in text}
    n_targets = 0
    for read in _row_groups(path, dtypes):
        frame, _ = filter_rows(read(keys), cfg, origin, region_col, target, [], None, batch=True)
        n_targets += len(frame)
        for col in text:
            series = read([col])[col].loc[frame.index]
            converted = pd.to_numeric(series, errors="coerce")
            all_numbers, any_present = numbers_as_text(series, converted)
            numbers[col] = numbers[col] and all_numbers
            present[col] = present[col] or any_present
            for value in series[series.notna() & converted.isna()].unique().tolist():
                if len(bad[col]) < 5 and value not in bad[col]:
                    bad[col].append(value)
    if n_targets == 0:
        raise no_target_error(target, origin)
    decisions = {}
    for col in text:
        if not present[col]:
            raise all_missing_error(col, origin)
        decisions[col] = numbers[col]
        if not numbers[col] and (cfg.data.categorical == "error" or col in cfg.data.log_features):
            raise non_numeric_error(col, pd.Series(bad[col], dtype=object), cfg)
    return decisions
