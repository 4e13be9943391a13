"""data.storage = "disk": a Parquet source cleaned in batches into region-sorted column
files gives the same regions, rows, statistics, encodings and errors as in memory."""

from __future__ import annotations

import gc
import itertools

import numpy as np
import pandas as pd
import pytest

from fedglobal.data import (
    encode_region,
    list_regions,
    load_region,
    local_stats,
    merge_stats,
    ondisk,
    region_stats,
)
from fedglobal.data.regions import prepared_source, region_sizes
from fedglobal.data.sources import read_source
from fedglobal.errors import DataError

FIELDS = ("x_train", "y_train", "x_test", "y_test")


def _write(frame: pd.DataFrame, path, rows: int = 7, **kwargs) -> None:
    """Row groups of 7 rows, so every table here is cleaned in many pieces."""
    frame.to_parquet(path, row_group_size=rows, **kwargs)


def _assert_same(make_cfg, **data) -> None:
    memory, disk = make_cfg(**data, storage="memory"), make_cfg(**data, storage="disk")
    assert prepared_source(memory).store is None
    assert prepared_source(disk).store is not None
    regions = list_regions(memory)
    assert list_regions(disk) == regions and len(regions) >= 2
    assert region_sizes(disk) == region_sizes(memory)
    assert prepared_source(disk).rare == prepared_source(memory).rare
    schema = merge_stats([local_stats(load_region(memory, r), memory) for r in regions], memory)
    for region in regions:
        a, b = load_region(memory, region), load_region(disk, region)
        pd.testing.assert_frame_equal(b.train, a.train, check_exact=True)
        pd.testing.assert_frame_equal(b.test, a.test, check_exact=True)
        assert region_stats(disk, region) == region_stats(memory, region)
        fast, slow = encode_region(disk, region, schema), encode_region(memory, region, schema)
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
            assert getattr(fast, field).dtype == getattr(slow, field).dtype


def _weather(n: int = 160) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "city": rng.choice(["Lima", "Oslo", "Pune", "Kyiv"], size=n),
            "sky": rng.choice(np.array(["sunny", "cloudy", None], dtype=object), size=n),
            "temp": rng.normal(size=n).astype(np.float32),
            "wind": rng.choice([1.0, np.nan, 3.0], size=n),
            "gust": pd.array(rng.choice([4, 7, 9], size=n), dtype="Int64"),
            "uv": rng.integers(0, 11, size=n),
            "calm": rng.random(n) < 0.3,
            "rain": pd.array(rng.choice([0, 1, 2], size=n), dtype="Int64"),
        }
    )
    frame.loc[[3, 50], "gust"] = pd.NA  # an integer column with missing values: float64
    frame.loc[[10, 90], "rain"] = pd.NA  # rows without a target are dropped
    frame["pressure_text"] = [None if k % 9 == 0 else f"{1000 + k}" for k in range(n)]
    return frame


def test_gapminder_regression_missing_values_log_features(make_cfg, gapminder, tmp_path):
    table = read_source(make_cfg(**gapminder))
    _write(table, tmp_path / "g.parquet", rows=500)
    _assert_same(make_cfg, **{**gapminder, "source": "parquet:g.parquet"})


@pytest.mark.parametrize(
    "partition",
    [
        {"region": "city"},
        {"partition": "iid", "num_regions": 5},
        {"partition": "dirichlet", "num_regions": 4, "alpha": 0.3},
    ],
)
def test_text_integer_boolean_columns_and_integer_classes(make_cfg, tmp_path, partition):
    """Text categories, numbers stored as text, integers with missing values, booleans,
    float32 kept, integer classes with missing values; column, iid and Dirichlet."""
    _write(_weather(), tmp_path / "w.parquet")
    keys = {"source": "parquet:w.parquet", "target": "rain", "task": "classification"}
    _assert_same(make_cfg, **keys, **partition, min_region_rows=2)
    disk = make_cfg(**keys, **partition, min_region_rows=2, storage="disk")
    stats = region_stats(disk, list_regions(disk)[0])
    assert "sky" in stats.vocab and "pressure_text" in stats.sums  # text and numbers-as-text


@pytest.mark.parametrize("index", [False, True])
def test_missing_drop_rare_regions_drop_and_string_classes(make_cfg, tmp_path, index):
    """Also: a region whose rows are all dropped, and (index=True) a stored index."""
    frame = _weather(240)
    frame["rain"] = frame["rain"].map({0: "dry", 1: "drizzle", 2: "storm"})
    frame.loc[frame.index[:3], "city"] = "Quito"  # 3 rows: rare
    frame.loc[frame.index[3:15], ["city", "wind"]] = ["Nuuk", np.nan]  # dropped: no wind
    frame.loc[7, "city"] = None  # a row without a region is dropped
    if index:
        frame = frame.iloc[::-2]  # written with its index (a column of the file)
    _write(frame, tmp_path / "w.parquet", index=index)
    keys = {
        "source": "parquet:w.parquet",
        "region": "city",
        "target": "rain",
        "task": "classification",
        "rare_regions": "drop",
    }
    _assert_same(make_cfg, **keys, missing="drop")
    regions = list_regions(make_cfg(**keys, missing="drop", storage="disk"))
    assert "Quito" not in regions and "Nuuk" not in regions and "Lima" in regions
    if not index:
        assert "Nuuk" in list_regions(make_cfg(**keys, storage="disk"))


def test_regions_are_contiguous_blocks_and_files_go_with_the_store(make_cfg, tmp_path):
    _write(_weather(), tmp_path / "w.parquet")
    cfg = make_cfg(source="parquet:w.parquet", region="city", target="uv", storage="disk")
    prepared = prepared_source(cfg)
    folder = prepared.store.folder
    assert folder.is_dir() and any(folder.iterdir())
    spans = [prepared.groups.span(r) for r in list_regions(cfg)]
    assert spans[0][0] == 0 and spans[-1][1] == prepared.n_rows
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    from fedglobal.data import regions

    regions._cache.clear()
    del prepared
    gc.collect()
    assert not folder.exists()


def _error(make_cfg, storage: str, **data) -> str:
    from fedglobal.data import regions

    regions._cache.clear()
    with pytest.raises(DataError) as info:
        list_regions(make_cfg(**data, storage=storage))
    return str(info.value)


@pytest.mark.parametrize(
    ("change", "data", "expected"),
    [
        (lambda f: f.assign(wind=np.nan), {}, "all values missing"),
        (lambda f: f, {"categorical": "error"}, "non-numeric"),
        (lambda f: f.assign(rain=pd.array([pd.NA] * len(f), "Int64")), {}, "has no values"),
        (lambda f: f.assign(rain=1), {}, "only one class"),
        (
            lambda f: f.assign(wind=np.nan),
            {"missing": "drop", "features": ["wind", "temp"]},
            "all values missing",
        ),
        (lambda f: f, {"min_region_rows": 100}, "fewer than data.min_region_rows"),
        (lambda f: f, {"target": "sky", "task": "regression"}, "is not numeric"),
        (lambda f: f, {"region": "citi"}, "did you mean 'city'?"),
    ],
)
def test_errors_are_the_in_memory_errors(make_cfg, tmp_path, change, data, expected):
    _write(change(_weather()), tmp_path / "w.parquet")
    keys = {
        "source": "parquet:w.parquet",
        "region": "city",
        "target": "rain",
        "task": "classification",
        **data,
    }
    in_memory = _error(make_cfg, "memory", **keys)
    assert expected in in_memory
    assert _error(make_cfg, "disk", **keys) == in_memory


def test_disk_needs_a_parquet_source(make_cfg, tmp_path):
    _weather().to_csv(tmp_path / "w.csv", index=False)
    message = _error(make_cfg, "disk", source="csv:w.csv", region="city", target="uv")
    assert "data.storage = 'disk' reads parquet: sources only" in message
    assert "'csv:" in message and "w.csv'" in message and "data.storage = 'memory'" in message


def test_disk_names_a_column_it_cannot_read_out_of_core(make_cfg, tmp_path):
    frame = _weather().assign(day=pd.date_range("2024-01-01", periods=160, freq="D"))
    _write(frame, tmp_path / "w.parquet")
    message = _error(make_cfg, "disk", source="parquet:w.parquet", region="city", target="uv")
    assert "'day' (timestamp" in message and "data.storage = 'memory'" in message
    # auto reads it in memory instead
    cfg = make_cfg(source="parquet:w.parquet", region="city", target="uv", storage="auto")
    assert ondisk.out_of_core_path(cfg) is None


def test_auto_chooses_disk_from_the_size_threshold(make_cfg, tmp_path, monkeypatch):
    _write(_weather(), tmp_path / "w.parquet")
    cfg = make_cfg(source="parquet:w.parquet", region="city", target="uv")
    assert cfg.data.storage == "auto"
    assert ondisk.out_of_core_path(cfg) is None  # a small file: memory
    monkeypatch.setattr(ondisk, "AUTO_DISK_BYTES", 1)
    assert ondisk.out_of_core_path(cfg) == (tmp_path / "w.parquet").resolve()
    assert (
        ondisk.out_of_core_path(
            make_cfg(source="parquet:w.parquet", region="city", target="uv", storage="memory")
        )
        is None
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is empty"),
        (b"city,uv\nLima,3\n", "is not a Parquet file (no 'PAR1' magic bytes)"),
        (b"PAR1 but cut short", "is not a readable Parquet file"),
    ],
)
def test_a_bad_file_is_the_in_memory_error(make_cfg, tmp_path, content, expected):
    (tmp_path / "w.parquet").write_bytes(content)
    keys = {"source": "parquet:w.parquet", "region": "city", "target": "uv"}
    in_memory, on_disk = _error(make_cfg, "memory", **keys), _error(make_cfg, "disk", **keys)
    assert expected in in_memory and expected in on_disk
    assert on_disk.split(": ")[0] == in_memory.split(": ")[0]  # the path and what is wrong
