"""experiments/benchmarks/ondisk_store.py: the partitioned-Parquet store it measures
against today's column files holds the same rows, statistics and encodings (so the
comparison is of two equal stores), and a region's read opens only its own partition
(files opened are counted through a ``pyarrow.fs`` filesystem that records them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pytest

from fedglobal.config import ExperimentConfig
from fedglobal.data import (
    encode_region,
    list_regions,
    load_region,
    local_stats,
    merge_stats,
    ondisk,
    region_stats,
    regions,
)
from fedglobal.data.cleaning import Prepared
from tests.data.test_data_spark import CountingFS

ROOT = Path(__file__).resolve().parents[2]
FIELDS = ("x_train", "y_train", "x_test", "y_test")


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "ondisk_store_bench", ROOT / "experiments" / "benchmarks" / "ondisk_store.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["ondisk_store_bench"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cfg(tmp_path: Path) -> ExperimentConfig:
    """Cities of 30-50 rows: float32 and float64 features (some missing), text, an
    integer class; written in row groups of 64 rows, so it is cleaned in pieces."""
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame(
        {
            "city": rng.choice(["Lima", "Oslo", "Pune", "Kyiv", "Lagos", "Quito", "Perth"], n),
            "temp": rng.normal(size=n).astype(np.float32),
            "wind": rng.choice([1.0, np.nan, 3.5], size=n),
            "sky": rng.choice(np.array(["sunny", "cloudy", None], dtype=object), size=n),
            "rain": rng.integers(0, 3, size=n),
        }
    )
    frame.to_parquet(tmp_path / "w.parquet", row_group_size=64)
    data = {
        "source": "parquet:w.parquet",
        "region": "city",
        "target": "rain",
        "task": "classification",
        "storage": "disk",
    }
    return ExperimentConfig.from_dict({"experiment": {"seed": 7}, "data": data}, base_dir=tmp_path)


def _with_parquet_store(bench, monkeypatch) -> None:
    """``data.storage = "disk"`` prepares the Parquet store (as the benchmark's child)."""
    original = ondisk.prepare_parquet

    def prepare(path, cfg):
        p = original(path, cfg)
        store = bench.ParquetStore.convert(p.store, p.groups)
        return Prepared(None, p.features, p.target, p.groups, p.rare, store)

    regions._cache.clear()
    monkeypatch.setattr(ondisk, "prepare_parquet", prepare)


@pytest.fixture
def parquet_store(bench, monkeypatch):
    _with_parquet_store(bench, monkeypatch)
    yield
    regions._cache.clear()


def _everything(cfg: ExperimentConfig) -> dict:
    names = list_regions(cfg)
    schema = merge_stats([local_stats(load_region(cfg, r), cfg) for r in names], cfg)
    return {
        r: (load_region(cfg, r), region_stats(cfg, r), encode_region(cfg, r, schema)) for r in names
    }


def test_the_parquet_store_holds_the_column_stores_rows(bench, cfg, monkeypatch):
    regions._cache.clear()
    columns = _everything(cfg)
    assert isinstance(regions.prepared_source(cfg).store, ondisk.ColumnStore)
    _with_parquet_store(bench, monkeypatch)
    try:
        parquet = _everything(cfg)
        store = regions.prepared_source(cfg).store
        assert isinstance(store, bench.ParquetStore)
        folders = sorted(p.name for p in (store.folder / "rows").iterdir())
        assert folders == sorted(f"region={r}" for r in columns)  # one partition per region
    finally:
        regions._cache.clear()
    assert list(parquet) == list(columns) and len(columns) == 7
    for region, (table, stats, arrays) in columns.items():
        p_table, p_stats, p_arrays = parquet[region]
        pd.testing.assert_frame_equal(p_table.train, table.train, check_exact=True)
        pd.testing.assert_frame_equal(p_table.test, table.test, check_exact=True)
        assert p_stats == stats
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(p_arrays, field), getattr(arrays, field))
            assert getattr(p_arrays, field).dtype == getattr(arrays, field).dtype


def test_a_region_opens_only_its_own_partition(bench, cfg, parquet_store, monkeypatch):
    counting = CountingFS()
    monkeypatch.setattr(bench, "FILESYSTEM", pafs.PyFileSystem(counting))
    names = list_regions(cfg)
    schema = merge_stats([region_stats(cfg, r) for r in names], cfg)
    counting.opened.clear()
    table = load_region(cfg, "Oslo")
    assert len(table.train) + len(table.test) > 30
    assert {Path(p).parent.name for p in counting.opened} == {"region=Oslo"}, counting.opened
    encode_region(cfg, names[0], schema)  # builds the encoding: every region
    counting.opened.clear()
    arrays = encode_region(cfg, "Pune", schema)
    assert len(arrays.x_train) > 20
    opened = [Path(p) for p in counting.opened]
    assert {p.parent.name for p in opened} == {"region=Pune"}, opened
    assert {p.parent.parent.name for p in opened} == {"encoded-1", "encoded-2"}  # x and y
