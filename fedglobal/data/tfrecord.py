"""TFRecord files of ``tf.train.Example`` as a data source (``data.source = "tfrecord:DIR"``).

The feature spec (documented in docs/data.md):

- ``DIR`` is a directory of record files, read in sorted name order; a single
  record file works too. Files ending ``.tfrecord``, ``.tfrecords`` or
  ``.tfrec`` are read, and the same names ending ``.gz`` are read as
  GZIP-compressed. Other files in the directory are ignored.
- Each record is one serialized ``tf.train.Example``: one row of the table.
- Each feature of an Example is one column, named by its key; the table's
  columns are sorted by name (``data.features`` sets the model's order). Its list type
  gives the column's type: ``int64_list`` -> integers, ``float_list`` ->
  floats, ``bytes_list`` -> UTF-8 text.
- A feature holds zero values (a missing value) or one value. A feature
  absent from a record is a missing value too. More than one value, a
  column whose list type changes between records, and bytes that are not
  UTF-8 are errors that name the file, the record and the feature.

:func:`write_tfrecords` writes a pandas table in this format.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.errors import DataError

__all__ = ["RECORD_SUFFIXES", "read_tfrecords", "record_files", "write_tfrecords"]

RECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
_KINDS = ("int64_list", "float_list", "bytes_list")


def record_files(path: str | Path) -> list[Path]:
    """The record files of ``path`` (a directory or one file), sorted by name."""
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DataError(f"TFRecord path not found: {str(p)!r}")
    if p.is_file():
        return [p]
    files = sorted(f for f in p.iterdir() if f.is_file() and _is_record_file(f))
    if not files:
        raise DataError(
            f"{str(p)!r} has no TFRecord files (names ending {', '.join(RECORD_SUFFIXES)}, "
            "optionally followed by .gz)"
        )
    return files


def read_tfrecords(path: str | Path) -> pd.DataFrame:
    """Read a directory (or file) of ``tf.train.Example`` records into one table.

    Cached per process by the files' names, sizes and modification times; do
    not mutate the result.
    """
    files = record_files(path)
    key = tuple((str(f), os.stat(f).st_mtime_ns, os.stat(f).st_size) for f in files)
    return _read_cached(key)


@functools.lru_cache(maxsize=8)
def _read_cached(key: tuple[tuple[str, int, int], ...]) -> pd.DataFrame:
    columns: dict[str, dict[int, Any]] = {}
    kinds: dict[str, str] = {}
    row = 0
    for name, _, _ in key:
        for index, example in _examples(Path(name)):
            for feature, value, kind in _values(example, name, index):
                known = kinds.setdefault(feature, kind)
                if known != kind:
                    raise DataError(
                        f"{name}: record {index}: feature {feature!r} is a {kind}, "
                        f"but earlier records have a {known}"
                    )
                if value is not None:
                    columns.setdefault(feature, {})[row] = value
            row += 1
    if row == 0:
        raise DataError(f"the TFRecord files ({', '.join(n for n, _, _ in key)}) hold no records")
    names = sorted(kinds)  # protobuf maps have no order: sort the columns by name
    return pd.DataFrame({name: _column(columns.get(name, {}), kinds[name], row) for name in names})


def _column(values: dict[int, Any], kind: str, rows: int) -> pd.Series:
    if kind == "bytes_list":
        out = pd.Series([None] * rows, dtype=object)
    else:
        out = pd.Series(np.full(rows, np.nan), dtype=np.float64)
    if values:
        out.iloc[list(values)] = list(values.values())
    if kind == "int64_list" and len(values) == rows:
        out = out.astype(np.int64)
    return out


def _examples(path: Path) -> Iterable[tuple[int, Any]]:
    import tensorflow as tf

    compression = "GZIP" if path.name.endswith(".gz") else ""
    dataset = tf.data.TFRecordDataset(str(path), compression_type=compression)
    try:
        for index, raw in enumerate(dataset.as_numpy_iterator()):
            try:
                yield index, tf.train.Example.FromString(raw)
            except Exception as exc:  # protobuf's DecodeError
                raise DataError(
                    f"{path}: record {index} is not a tf.train.Example: {exc}"
                ) from None
    except tf.errors.OpError as exc:
        raise DataError(f"{path} is not a readable TFRecord file: {exc.message}") from None


def _values(example: Any, name: str, index: int) -> Iterable[tuple[str, Any, str]]:
    for feature, holder in example.features.feature.items():
        kind = holder.WhichOneof("kind")
        if kind is None:
            continue  # an empty Feature: no type, no value
        values = getattr(holder, kind).value
        if len(values) > 1:
            raise DataError(
                f"{name}: record {index}: feature {feature!r} has {len(values)} values; "
                "each feature must hold one value (or none, for a missing value)"
            )
        value = values[0] if values else None
        if kind == "bytes_list" and value is not None:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(
                    f"{name}: record {index}: feature {feature!r} holds bytes that are not UTF-8"
                ) from None
        yield feature, value, kind


def _is_record_file(path: Path) -> bool:
    name = path.name.removesuffix(".gz")
    return name.endswith(RECORD_SUFFIXES)


def write_tfrecords(
    frame: pd.DataFrame, directory: str | Path, *, shards: int = 1, gzip: bool = False
) -> list[Path]:
    """Write ``frame`` as ``tf.train.Example`` records in ``shards`` files under ``directory``.

    Integer and boolean columns become ``int64_list``, other numbers
    ``float_list``, everything else UTF-8 ``bytes_list``. A missing value is
    a feature with no value. Returns the written files.
    """
    import tensorflow as tf

    if shards < 1:
        raise DataError(f"shards must be >= 1, got {shards}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    makers = {str(c): _feature_maker(frame[c], tf) for c in frame.columns}
    suffix = ".tfrecord.gz" if gzip else ".tfrecord"
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    paths = [out / f"part-{i:05d}-of-{shards:05d}{suffix}" for i in range(shards)]
    bounds = np.linspace(0, len(frame), shards + 1).astype(int)
    records = frame.to_dict("records")
    for path, start, stop in zip(paths, bounds[:-1], bounds[1:], strict=True):
        with tf.io.TFRecordWriter(str(path), options) as writer:
            for record in records[start:stop]:
                features = {k: makers[str(k)](v) for k, v in record.items()}
                example = tf.train.Example(features=tf.train.Features(feature=features))
                writer.write(example.SerializeToString())
    return paths


def _feature_maker(column: pd.Series, tf: Any) -> Any:
    is_bool = pd.api.types.is_bool_dtype(column)
    if is_bool or pd.api.types.is_integer_dtype(column):

        def make(value: Any) -> Any:
            values = [] if pd.isna(value) else [int(value)]
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    elif pd.api.types.is_numeric_dtype(column):

        def make(value: Any) -> Any:
            values = [] if pd.isna(value) else [float(value)]
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    else:

        def make(value: Any) -> Any:
            values = [] if value is None or pd.isna(value) else [str(value).encode("utf-8")]
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    return make
