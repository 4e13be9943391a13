"""The Fashion-MNIST source: the IDX reader, the source strings and the install message."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from fedglobal.data import fashion_mnist
from fedglobal.data.fashion_mnist import data_dir, fashion_mnist_table, read_idx
from fedglobal.data.sources import parse_source
from fedglobal.errors import DataError


def _idx(array: np.ndarray, code: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_set(folder, n_train=12, n_test=5):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        images_name, labels_name = fashion_mnist.FILES[split]
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{images_name}.gz").write_bytes(gzip.compress(_idx(images, 0x08)))
        (folder / labels_name).write_bytes(_idx(labels, 0x08))  # uncompressed works too
    return folder


def test_read_idx_round_trip(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a").write_bytes(_idx(a, 0x0C))
    (tmp_path / "a.gz").write_bytes(gzip.compress(_idx(a, 0x0C)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)
    f = np.linspace(0, 1, 6).astype(np.float64)
    (tmp_path / "f").write_bytes(_idx(f, 0x0E))
    np.testing.assert_array_equal(read_idx(tmp_path / "f"), f)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"PK\x03\x04junk", "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated IDX header"),
        (struct.pack(">BBBBI", 0, 0, 8, 1, 10) + b"\x00" * 4, "declares shape"),
    ],
)
def test_read_idx_rejects_malformed_files(tmp_path, payload, match):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(DataError, match=match):
        read_idx(tmp_path / "bad")


def test_table_from_a_folder_of_idx_files(tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_DIR, str(_write_set(tmp_path)))
    table = fashion_mnist_table("train")
    assert table.shape == (12, 785) and list(table.columns[:2]) == ["p0", "p1"]
    assert table["label"].tolist() == [i % 10 for i in range(12)]
    assert len(fashion_mnist_table("all")) == 17
    assert len(fashion_mnist_table("train", 5)) == 5
    with pytest.raises(DataError, match="has only 12 images"):
        fashion_mnist_table("train", 13)


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_DIR, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist_table("test")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(fashion_mnist.ENV_DIR, str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\(.gz\) not found.*apt-get"):
        fashion_mnist_table("test")


def test_source_strings():
    assert parse_source("fashion-mnist").location == "train"
    assert parse_source("fashion-mnist:test:100").location == "test:100"
    with pytest.raises(DataError, match="unknown Fashion-MNIST split 'valid'"):
        parse_source("fashion-mnist:valid")
    with pytest.raises(DataError, match="positive number of images"):
        parse_source("fashion-mnist:train:ten")


@pytest.mark.skipif(
    not (data_dir() / "t10k-labels-idx1-ubyte.gz").is_file(),
    reason="Debian package dataset-fashion-mnist not installed",
)
def test_the_real_package_through_the_data_layer():
    import fedglobal
    from fedglobal import data

    table = fashion_mnist_table("test")
    assert table.shape == (10_000, 785)
    assert table["label"].value_counts().tolist() == [1000] * 10
    assert table.iloc[:, :-1].to_numpy().max() == 255
    cfg = fedglobal.load_config(
        {
            "data": {
                "source": "fashion-mnist:test:2000",
                "target": "label",
                "task": "classification",
                "partition": "dirichlet",
                "alpha": 0.5,
                "num_regions": 4,
            },
            "model": {"name": "cnn"},
        }
    )
    regions = data.list_regions(cfg)
    assert len(regions) == 4
    sizes = [len(data.load_region(cfg, r).train) for r in regions]
    assert sum(sizes) == pytest.approx(1600, abs=4)
