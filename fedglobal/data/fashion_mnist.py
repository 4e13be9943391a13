"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, read with a small IDX reader.

Xiao, Rasul, Vollgraf 2017, "Fashion-MNIST: a Novel Image Dataset for
Benchmarking Machine Learning Algorithms" (https://arxiv.org/abs/1708.07747):
70,000 28x28 grey images of 10 clothing classes, 60,000 for training and
10,000 for testing. The Debian package installs the original gzipped IDX files
under ``/usr/share/datasets/fashion-mnist`` (``FEDGLOBAL_FASHION_MNIST_DIR``
overrides the folder).

Source strings (``data.source``):

- ``fashion-mnist`` or ``fashion-mnist:train``: the 60,000 training images;
- ``fashion-mnist:test``: the 10,000 test images;
- ``fashion-mnist:all``: both, 70,000 images (training first);
- ``...:N`` (e.g. ``fashion-mnist:train:12000``): only the first N images of
  that split, for small benchmarks. The files' order is fixed, so this is the
  same subset in every process and for every seed.

The table has one row per image: columns ``p0`` .. ``p783`` (pixel intensities
0-255, row-major) and ``label`` (the class index 0-9, see :data:`CLASSES`).
Set ``data.target = "label"`` and ``task = "classification"``; it has no region
column, so partition it with ``partition = "iid"``, ``"dirichlet"`` or ``"shards"``. fedglobal
splits every region's rows into train and test itself (``test_fraction``).
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import pandas as pd

from fedglobal.errors import DataError

__all__ = [
    "CLASSES",
    "DEFAULT_DIR",
    "FILES",
    "SCHEME",
    "TARGET",
    "data_dir",
    "fashion_mnist_table",
    "parse_location",
    "read_idx",
]

SCHEME = "fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_DIR = "FEDGLOBAL_FASHION_MNIST_DIR"
TARGET = "label"
SIDE = 28
SPLITS = ("train", "test", "all")
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
INSTALL_HINT = (
    "install the Debian package: `sudo apt-get install dataset-fashion-mnist` "
    "(`make install` does it when run as root), or point FEDGLOBAL_FASHION_MNIST_DIR "
    "at a folder holding the four IDX files"
)

# IDX type codes (http://yann.lecun.com/exdb/mnist/): code -> big-endian dtype.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def data_dir() -> Path:
    """The folder with the IDX files: ``$FEDGLOBAL_FASHION_MNIST_DIR`` or the Debian path."""
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into an array of its declared type and shape.

    The format: two zero bytes, a type code, the number of dimensions, one
    big-endian uint32 per dimension, then the values in row-major order.

    Raises:
        DataError: the file is missing, truncated or not IDX.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read IDX file {str(p)!r}: {exc}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(f"{str(p)!r} is a corrupt gzip file: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{str(p)!r} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{str(p)!r}: truncated IDX header ({ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{str(p)!r}: IDX header declares shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(raw) - header} bytes"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="), copy=False)


def parse_location(location: str, text: str) -> tuple[str, int | None]:
    """``"train"`` / ``"test"`` / ``"all"`` with an optional ``":N"`` -> (split, limit)."""
    split, _, count = location.strip().lower().partition(":")
    split = split or "train"
    if split not in SPLITS:
        raise DataError(
            f"data.source = {text!r}: unknown Fashion-MNIST split {split!r} "
            f"(use fashion-mnist, fashion-mnist:train, fashion-mnist:test or fashion-mnist:all, "
            "optionally followed by :N for the first N images)"
        )
    if not count:
        return split, None
    if not count.isdigit() or int(count) < 1:
        raise DataError(
            f"data.source = {text!r}: {count!r} after the split must be a positive number of "
            "images, e.g. fashion-mnist:train:12000"
        )
    return split, int(count)


def _split_arrays(split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = FILES[split]
    paths = []
    for name in (images_name, labels_name):
        found = [folder / f"{name}.gz", folder / name]
        path = next((f for f in found if f.is_file()), None)
        if path is None:
            raise DataError(
                f"Fashion-MNIST file {name}(.gz) not found in {str(folder)!r}; {INSTALL_HINT}"
            )
        paths.append(path)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise DataError(f"{paths[0]}: expected images of shape (n, 28, 28), got {images.shape}")
    if labels.shape != (images.shape[0],):
        raise DataError(
            f"{paths[1]}: {labels.shape[0] if labels.ndim else 0} labels for "
            f"{images.shape[0]} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise DataError(f"{paths[1]}: labels outside 0-9")
    return images.reshape(len(images), SIDE * SIDE), labels


@functools.lru_cache(maxsize=4)
def _table(split: str, limit: int | None, folder: str) -> pd.DataFrame:
    path = Path(folder)
    if not path.is_dir():
        raise DataError(f"Fashion-MNIST is not installed: no folder {folder!r}; {INSTALL_HINT}")
    parts = ("train", "test") if split == "all" else (split,)
    arrays = [_split_arrays(part, path) for part in parts]
    x = np.concatenate([a[0] for a in arrays])
    y = np.concatenate([a[1] for a in arrays])
    if limit is not None:
        if limit > len(x):
            raise DataError(f"fashion-mnist:{split}:{limit}: the split has only {len(x)} images")
        x, y = x[:limit], y[:limit]
    frame = pd.DataFrame(x, columns=[f"p{j}" for j in range(SIDE * SIDE)])
    frame[TARGET] = y.astype(np.int64)
    return frame


def fashion_mnist_table(split: str = "train", limit: int | None = None) -> pd.DataFrame:
    """Fashion-MNIST as one table (``p0``..``p783``, ``label``); cached, do not mutate.

    Args:
        split: ``"train"`` (60,000 images), ``"test"`` (10,000) or ``"all"``.
        limit: keep only the first ``limit`` images.

    Raises:
        DataError: the package is not installed (says how to install it), or the
            files are malformed.
    """
    if split not in SPLITS:
        raise DataError(f"unknown Fashion-MNIST split {split!r} (known: {', '.join(SPLITS)})")
    return _table(split, limit, str(data_dir()))
