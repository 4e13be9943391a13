"""Federated statistics, the merged schema and encoding on gapminder."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from fedglobal.data import (
    LocalStats,
    RegionTable,
    Schema,
    encode,
    list_regions,
    load_region,
    local_stats,
    merge_stats,
)
from fedglobal.errors import DataError


@pytest.fixture
def tables(gapminder_cfg) -> list[RegionTable]:
    return [load_region(gapminder_cfg, r) for r in list_regions(gapminder_cfg)]


@pytest.fixture
def schema(tables, gapminder_cfg) -> Schema:
    return merge_stats([local_stats(t, gapminder_cfg) for t in tables], gapminder_cfg)


def test_schema_columns_and_indicators(schema):
    # year has no missing values; the other four do (in the train splits).
    assert schema.feature_names == [
        "year",
        "infant_mortality",
        "infant_mortality__missing",
        "fertility",
        "fertility__missing",
        "population",
        "population__missing",
        "gdp",
        "gdp__missing",
    ]
    assert schema.input_dim == 9
    assert schema.task == "regression" and schema.classes is None and schema.num_classes is None
    for name, m, v in zip(schema.feature_names, schema.mean, schema.variance, strict=True):
        if name.endswith("__missing"):
            assert (m, v) == (0.0, 1.0)


def test_merged_moments_equal_pooled_pandas_moments(schema, tables):
    pooled = pd.concat([t.train for t in tables], ignore_index=True)
    for col in ["population", "gdp"]:
        pooled[col] = np.sign(pooled[col]) * np.log1p(np.abs(pooled[col]))
    for col in ["year", "infant_mortality", "fertility", "population", "gdp"]:
        j = schema.feature_names.index(col)
        assert schema.mean[j] == pytest.approx(pooled[col].mean(), rel=1e-9)
        assert schema.variance[j] == pytest.approx(pooled[col].var(ddof=0), rel=1e-6)
        assert schema.impute[col] == schema.mean[j]
    target = pooled["life_expectancy"]
    assert schema.target_mean == pytest.approx(target.mean(), rel=1e-9)
    assert schema.target_variance == pytest.approx(target.var(ddof=0), rel=1e-6)


def test_stats_use_the_train_split_only(tables, gapminder_cfg):
    table = tables[0]
    stats = local_stats(table, gapminder_cfg)
    assert stats.n_rows == len(table.train)
    assert stats.counts["gdp"] == table.train["gdp"].notna().sum()
    assert stats.target_count == len(table.train)


def test_records_round_trip(tables, gapminder_cfg):
    stats = local_stats(tables[3], gapminder_cfg)
    metrics, configs = stats.to_records()
    assert all(isinstance(v, int | float) for v in metrics.values())
    assert all(isinstance(v, str | list) for v in configs.values())
    assert {"n_rows", "sum/gdp", "sumsq/gdp", "count/gdp", "target_sum"} <= metrics.keys()
    assert LocalStats.from_records(metrics, configs) == stats


def test_schema_json_round_trip(schema):
    again = Schema.from_json(schema.to_json())
    assert again == schema and again.input_dim == schema.input_dim


def test_encode_shapes_types_and_imputation(tables, schema):
    arrays = encode(tables[0], schema)
    n_train, n_test = len(tables[0].train), len(tables[0].test)
    assert arrays.x_train.shape == (n_train, 9) and arrays.x_train.dtype == np.float32
    assert arrays.x_test.shape == (n_test, 9)
    assert arrays.y_train.shape == (n_train, 1) and arrays.y_train.dtype == np.float32
    assert np.isfinite(arrays.x_train).all() and np.isfinite(arrays.x_test).all()
    gdp, flag = schema.feature_names.index("gdp"), schema.feature_names.index("gdp__missing")
    missing = tables[0].train["gdp"].isna().to_numpy()
    assert missing.any()
    assert (arrays.x_train[missing, flag] == 1).all() and (
        arrays.x_train[~missing, flag] == 0
    ).all()
    np.testing.assert_allclose(arrays.x_train[missing, gdp], schema.impute["gdp"], rtol=1e-6)
    expected = np.log1p(tables[0].train["gdp"].to_numpy()[~missing])
    np.testing.assert_allclose(arrays.x_train[~missing, gdp], expected, rtol=1e-6)


def test_constant_column_gets_unit_variance(make_cfg, tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "site": np.repeat(["a", "b"], 30),
            "const": 1990.0,
            "x": rng.normal(size=60),
            "y": rng.normal(size=60),
        }
    )
    frame.to_csv(tmp_path / "t.csv", index=False)
    cfg = make_cfg(source="csv:t.csv", region="site", target="y")
    stats = [local_stats(load_region(cfg, r), cfg) for r in list_regions(cfg)]
    schema = merge_stats(stats, cfg)
    assert schema.variance[schema.feature_names.index("const")] == 1.0
    assert schema.mean[schema.feature_names.index("const")] == pytest.approx(1990.0)


def test_merge_rejects_a_column_missing_everywhere(tables, gapminder_cfg):
    stats = [local_stats(t, gapminder_cfg) for t in tables]
    stats = [dataclasses.replace(s, counts={**s.counts, "gdp": 0}) for s in stats]
    with pytest.raises(DataError, match=r"'gdp': all values missing"):
        merge_stats(stats, gapminder_cfg)


def test_merge_rejects_nothing(gapminder_cfg):
    with pytest.raises(DataError, match=r"at least one region"):
        merge_stats([], gapminder_cfg)


def test_records_fit_flower_records(tables, gapminder_cfg):
    from flwr.app import ConfigRecord, MetricRecord

    stats = local_stats(tables[0], gapminder_cfg)
    metrics, configs = stats.to_records()
    back = LocalStats.from_records(dict(MetricRecord(metrics)), dict(ConfigRecord(configs)))
    assert back == stats


def test_typed_columns_encode_as_the_same_values_read_as_objects(make_cfg, tmp_path):
    """Typed columns take the block/distinct-value fast paths; the same values held as
    Python objects take the per-value path: statistics and arrays must be identical."""
    rng = np.random.default_rng(1)
    n = 80
    x = rng.normal(size=n)
    x[[3, 17]] = np.nan
    frame = pd.DataFrame(
        {
            "site": np.repeat(["a", "b"], n // 2),
            "x": x,
            "count": pd.array(rng.integers(0, 9, size=n), dtype="Int64"),
            "flag": rng.integers(0, 2, size=n).astype(bool),
            "level": pd.array(rng.integers(1, 4, size=n)).astype(float),
            "zone": pd.Categorical(rng.choice(["north", "south", "east"], size=n)),
            "code": pd.array(rng.choice(["k1", "k2"], size=n), dtype="string"),
            "y": rng.integers(0, 3, size=n),
        }
    )
    frame.loc[5, "count"] = pd.NA
    frame.loc[7, "zone"] = np.nan
    frame.to_parquet(tmp_path / "t.parquet")
    cfg = make_cfg(source="parquet:t.parquet", region="site", target="y", task="classification")
    tables = [load_region(cfg, r) for r in list_regions(cfg)]
    stats = [local_stats(t, cfg) for t in tables]
    schema = merge_stats(stats, cfg)

    def as_objects(table: RegionTable) -> RegionTable:
        def obj(f: pd.DataFrame) -> pd.DataFrame:
            out = f.astype(object)
            return out.where(f.notna(), None)

        return RegionTable(region=table.region, train=obj(table.train), test=obj(table.test))

    objects = [as_objects(t) for t in tables]
    assert all(pd.api.types.is_object_dtype(d) for d in objects[0].train.dtypes)
    boxed_stats = [local_stats(t, cfg) for t in objects]
    assert [s.labels for s in boxed_stats] == [s.labels for s in stats]
    for typed_stats, object_stats in zip(stats, boxed_stats, strict=True):
        for col in ("zone", "code"):  # object columns of numbers count as categorical
            assert typed_stats.vocab[col] == object_stats.vocab[col]
    assert set(schema.numeric) == {"x", "count", "flag", "level"}
    for typed, boxed in zip(tables, objects, strict=True):
        fast, slow = encode(typed, schema), encode(boxed, schema)
        for field in ("x_train", "y_train", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
    assert schema.classes == ["0", "1", "2"]
