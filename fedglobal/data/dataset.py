"""Partitioned Parquet datasets, as Spark writes them, read with ``pyarrow.dataset``.

``df.write.partitionBy("region").parquet(DIR)`` (Spark, and most data lakes) writes
one folder per value of the partition key, ``DIR/region=NAME/part-*.parquet``
(snappy-compressed), plus ``_SUCCESS`` and ``.part-*.crc`` checksum files. A
``parquet:DIR`` source is such a dataset: its files are found under DIR (names
starting with ``_`` or ``.`` are not data, as in Spark and pyarrow) and the key
of each ``KEY=VALUE`` folder becomes a column (Hive partitioning; values are
URI-decoded, ``__HIVE_DEFAULT_PARTITION__`` is missing).

When the partition key is the region column (``data.region``), a region reads only
its own partition: :func:`read_region` picks the files under its ``KEY=VALUE``
folder and reads them as a dataset, and no other file is opened, not even for the
schema (tests/data/test_data_spark.py counts the files opened). Rows keep their order
within each file, files are read in path order, and the key column comes last.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pandas as pd

from fedglobal.data._util import canonical_label, return_freed_memory, show, suggest
from fedglobal.errors import DataError

__all__ = [
    "FILESYSTEM",
    "dataset_identity",
    "is_dataset",
    "partition_keys",
    "read_dataset",
    "read_region",
    "region_key",
]

#: The ``pyarrow.fs`` filesystem datasets are read through (None: the local one).
#: Tests set a counting one to check which files a region opens.
FILESYSTEM: Any = None

#: Hive's (and Spark's) folder value for a missing key.
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_NOT_DATA = ("_", ".")  # _SUCCESS, _committed_*, .part-*.crc (Spark), .DS_Store


def _data_files(path: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith(_NOT_DATA))
        files.extend(Path(root) / n for n in sorted(names) if not n.startswith(_NOT_DATA))
    return files


def is_dataset(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding Parquet files (a partitioned dataset)."""
    p = Path(path)
    if not p.is_dir():
        return False
    return any(f.suffix.lower() in (".parquet", ".pq") for f in _data_files(p))


def dataset_identity(path: str | Path) -> tuple:
    """What a read of the dataset depends on: each data file's path, size and mtime."""
    out: list = [str(path)]
    for f in _data_files(Path(path)):
        st = f.stat()
        out.append((str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


def _open(path: Path) -> Any:
    import pyarrow.dataset as ds

    try:
        return ds.dataset(
            str(path),
            format="parquet",
            partitioning=ds.HivePartitioning.discover(infer_dictionary=False),
            filesystem=FILESYSTEM,
            ignore_prefixes=list(_NOT_DATA),
        )
    except Exception as exc:  # pyarrow raises several types for unreadable datasets
        raise DataError(f"{str(path)!r} is not a readable Parquet dataset: {exc}") from None


def partition_keys(path: str | Path) -> list[str]:
    """The dataset's partition keys (``region`` for ``region=NAME`` folders), outermost
    first, from its folder names (no file is opened)."""
    p = Path(path)
    keys: list[str] = []
    for f in _data_files(p):
        for part in f.relative_to(p).parts[:-1]:
            name, sep, _ = part.partition("=")
            if sep and name not in keys:
                keys.append(name)
    return keys


def region_key(path: str | Path, region_column: str | None) -> str | None:
    """``region_column`` if it is a partition key of the dataset, else None."""
    if region_column is None:
        return None
    return region_column if region_column in partition_keys(path) else None


def _to_pandas(table: Any, origin: str) -> pd.DataFrame:
    try:
        frame = table.to_pandas()
    finally:
        return_freed_memory()
    if frame.shape[0] == 0:
        raise DataError(f"Parquet dataset {origin!r} has no rows")
    return frame


def read_dataset(path: str | Path) -> pd.DataFrame:
    """Every row of the dataset at ``path``, the partition keys as columns."""
    p = Path(path)
    try:
        table = _open(p).to_table()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{str(p)!r} is not a readable Parquet dataset: {exc}") from None
    return _to_pandas(table, str(p))


def _partition_value(relative: Path, key: str) -> str | None:
    """The canonical value of ``key`` in a file's ``KEY=VALUE`` folders (None: none)."""
    for part in relative.parts[:-1]:
        name, sep, value = part.partition("=")
        if sep and name == key:
            value = unquote(value)
            return None if value == HIVE_NULL else canonical_label(value)
    return None


def read_region(path: str | Path, key: str, region: str) -> pd.DataFrame:
    """The rows of partition ``key = region`` only: its files are picked by their
    ``KEY=VALUE`` folder and read as a ``pyarrow.dataset`` (Hive partitioning, so
    the keys are columns); no other partition's file is opened. DataError names the
    partitions found if ``region`` is not one."""
    import pyarrow.dataset as ds

    p = Path(path)
    found: dict[str, list[str]] = {}
    for f in _data_files(p):
        value = _partition_value(f.relative_to(p), key)
        if value is not None:
            found.setdefault(value, []).append(str(f))
    if region not in found:
        names = sorted(found)
        raise DataError(
            f"Parquet dataset {str(p)!r} has no partition {key}={region!r}"
            f"{suggest(region, names)} (partitions: {show(names)})"
        )
    try:
        table = ds.dataset(
            found[region],
            format="parquet",
            partitioning=ds.HivePartitioning.discover(infer_dictionary=False),
            partition_base_dir=str(p),
            filesystem=FILESYSTEM,
        ).to_table()
    except Exception as exc:  # pyarrow raises several types for unreadable datasets
        raise DataError(f"{str(p)!r} is not a readable Parquet dataset: {exc}") from None
    return _to_pandas(table, f"{p}/{key}={region}")
