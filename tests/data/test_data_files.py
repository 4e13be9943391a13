"""The user's own CSV and Parquet files, categorical features, classification, data_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedglobal.data import encode, list_regions, load_region, local_stats, merge_stats
from fedglobal.errors import DataError


def _table(n: int = 90, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    city = np.array(["Lima", "Oslo", "Pune"])[np.arange(n) % 3]
    return pd.DataFrame(
        {
            "city": city,
            "temp": rng.normal(15, 5, n),
            "humidity": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(20, 90, n)),
            "sky": rng.choice(["clear", "cloudy", "rain"], n),
            "rain": rng.choice(["no", "yes"], n),
        }
    )


@pytest.fixture(params=["csv", "parquet"])
def fmt(request) -> str:
    return request.param


def _write(frame: pd.DataFrame, path: Path, fmt: str) -> None:
    if fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)


def test_file_source_with_categorical_feature(make_cfg, tmp_path, fmt):
    _write(_table(), tmp_path / f"weather.{fmt}", fmt)
    cfg = make_cfg(
        source=f"{fmt}:weather.{fmt}", region="city", target="rain", task="classification"
    )
    regions = list_regions(cfg)
    assert regions == ["Lima", "Oslo", "Pune"]
    tables = [load_region(cfg, r) for r in regions]
    assert list(tables[0].train.columns) == ["temp", "humidity", "sky", "rain"]
    schema = merge_stats([local_stats(t, cfg) for t in tables], cfg)
    assert schema.feature_names == [
        "temp",
        "humidity",
        "humidity__missing",
        "sky=clear",
        "sky=cloudy",
        "sky=rain",
    ]
    assert schema.classes == ["no", "yes"] and schema.num_classes == 2
    arrays = encode(tables[1], schema)
    assert arrays.y_train.dtype == np.int32 and arrays.y_train.shape == (len(tables[1].train),)
    onehot = arrays.x_train[:, 3:6]
    assert (onehot.sum(axis=1) == 1).all()
    sky = tables[1].train["sky"].to_numpy()
    assert (onehot[sky == "cloudy", 1] == 1).all()
    expected_y = (tables[1].train["rain"] == "yes").astype(int).to_numpy()
    np.testing.assert_array_equal(arrays.y_train, expected_y)


def test_unseen_category_encodes_as_zeros_and_unknown_label_fails(make_cfg, tmp_path):
    _write(_table(), tmp_path / "w.csv", "csv")
    cfg = make_cfg(source="csv:w.csv", region="city", target="rain", task="classification")
    tables = [load_region(cfg, r) for r in list_regions(cfg)]
    schema = merge_stats([local_stats(t, cfg) for t in tables], cfg)
    t = tables[0]
    test = t.test.copy()
    test.loc[0, "sky"] = "snow"
    arrays = encode(type(t)(t.region, t.train, test), schema)
    assert (arrays.x_test[0, 3:6] == 0).all()
    test.loc[1, "rain"] = "hail"
    with pytest.raises(DataError, match=r"region 'Lima' \(test\): label 'hail'.*'no', 'yes'"):
        encode(type(t)(t.region, t.train, test), schema)


def test_missing_drop_policy_drops_rows(make_cfg, tmp_path):
    frame = _table()
    _write(frame, tmp_path / "w.csv", "csv")
    cfg = make_cfg(source="csv:w.csv", region="city", target="temp", missing="drop")
    n = sum(len(tb.train) + len(tb.test) for tb in (load_region(cfg, r) for r in list_regions(cfg)))
    assert n == frame["humidity"].notna().sum()
    schema = merge_stats([local_stats(load_region(cfg, r), cfg) for r in list_regions(cfg)], cfg)
    assert "humidity__missing" not in schema.feature_names


def test_missing_target_rows_are_dropped(make_cfg, tmp_path):
    frame = _table()
    frame.loc[:9, "temp"] = np.nan
    _write(frame, tmp_path / "w.csv", "csv")
    cfg = make_cfg(source="csv:w.csv", region="city", target="temp")
    n = sum(len(t.train) + len(t.test) for t in (load_region(cfg, r) for r in list_regions(cfg)))
    assert n == 80


def test_data_path_reads_only_the_regions_own_file(make_cfg, tmp_path, fmt):
    frame = _table()
    own = tmp_path / f"oslo.{fmt}"
    _write(frame[frame.city == "Oslo"].drop(columns="city"), own, fmt)
    both = tmp_path / f"both.{fmt}"
    _write(frame[frame.city != "Lima"], both, fmt)
    # data.source names a file that does not exist: data_path replaces it.
    cfg = make_cfg(source="csv:nowhere.csv", region="city", target="temp")
    table = load_region(cfg, "Oslo", data_path=str(own))
    assert len(table.train) + len(table.test) == 30
    table2 = load_region(cfg, "Oslo", data_path=str(both))
    pd.testing.assert_frame_equal(table.test, table2.test)
    with pytest.raises(DataError, match=r"no rows of region 'Lima'.*'Oslo', 'Pune'"):
        load_region(cfg, "Lima", data_path=str(both))


def test_file_is_read_once_per_process(make_cfg, tmp_path, monkeypatch):
    from fedglobal.data import sources

    reads = []
    real = sources._read_csv
    monkeypatch.setattr(sources, "_read_csv", lambda path: reads.append(path) or real(path))
    _write(_table(), tmp_path / "w.csv", "csv")
    cfg = make_cfg(source="csv:w.csv", region="city", target="temp")
    for region in list_regions(cfg):
        load_region(cfg, region)
    assert reads == [str(tmp_path / "w.csv")]


def test_an_edited_file_is_read_again_and_the_table_as_read_is_not_kept(make_cfg, tmp_path):
    from fedglobal.data import sources

    def write(cities: list[str]) -> None:
        n = 12 * len(cities)
        table = {"city": np.repeat(cities, 12), "t": np.arange(n), "y": np.arange(n) * 0.5}
        pd.DataFrame(table).to_parquet(tmp_path / "cities.parquet")

    write(["Lima", "Oslo"])
    cfg = make_cfg(source="parquet:cities.parquet", region="city", target="y")
    before = sources._read_file_cached.cache_info().currsize
    assert list_regions(cfg) == ["Lima", "Oslo"]
    assert sources._read_file_cached.cache_info().currsize == before  # prepared, raw not kept
    write(["Lima", "Oslo", "Pune"])
    cfg = make_cfg(source="parquet:cities.parquet", region="city", target="y")
    assert list_regions(cfg) == ["Lima", "Oslo", "Pune"]
    pune = load_region(cfg, "Pune")
    assert len(pune.train) + len(pune.test) == 12


def test_float32_features_stay_float32_and_give_the_float64_results(make_cfg, tmp_path):
    rng = np.random.default_rng(5)
    n = 60
    narrow = pd.DataFrame(
        {
            "city": np.repeat(["Lima", "Oslo", "Pune"], n // 3),
            "t": rng.normal(size=n).astype(np.float32),
            "pop": np.abs(rng.normal(size=n) * 1e6).astype(np.float32),
            "y": rng.normal(size=n),
        }
    )
    narrow.loc[3, "t"] = np.nan
    narrow.to_parquet(tmp_path / "narrow.parquet")
    narrow.astype({"t": np.float64, "pop": np.float64}).to_parquet(tmp_path / "wide.parquet")
    keys = {"region": "city", "target": "y", "log_features": ["pop"]}
    cfg32 = make_cfg(source="parquet:narrow.parquet", **keys)
    cfg64 = make_cfg(source="parquet:wide.parquet", **keys)
    assert load_region(cfg32, "Lima").train["t"].dtype == np.float32
    assert load_region(cfg64, "Lima").train["t"].dtype == np.float64
    stats32 = [local_stats(load_region(cfg32, r), cfg32) for r in list_regions(cfg32)]
    stats64 = [local_stats(load_region(cfg64, r), cfg64) for r in list_regions(cfg64)]
    assert stats32 == stats64
    schema = merge_stats(stats32, cfg32)
    for region in list_regions(cfg32):
        a, b = (
            encode(load_region(cfg32, region), schema),
            encode(load_region(cfg64, region), schema),
        )
        np.testing.assert_array_equal(a.x_train, b.x_train)
        np.testing.assert_array_equal(a.x_test, b.x_test)
