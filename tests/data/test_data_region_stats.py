"""region_stats: statistics from the prepared source's columns == local_stats per region."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedglobal.data import list_regions, load_region, local_stats, region_stats
from fedglobal.errors import DataError


def _assert_equal_everywhere(cfg) -> None:
    regions = list_regions(cfg)
    assert regions
    for region in regions:
        fast = region_stats(cfg, region)
        slow = local_stats(load_region(cfg, region), cfg)
        assert fast == slow, region  # exact: same reductions over the same values
        assert fast.to_records() == slow.to_records()


def test_regression_with_missing_values_and_log_features(gapminder_cfg):
    _assert_equal_everywhere(gapminder_cfg)
    some = region_stats(gapminder_cfg, list_regions(gapminder_cfg)[0])
    assert some.counts["gdp"] < some.n_rows  # the test covers missing values
    assert some.target_count == some.n_rows


def _weather(n: int = 120) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame(
        {
            "city": np.repeat(["Lima", "Oslo", "Pune", "Kyiv"], n // 4),
            "sky": rng.choice(np.array(["sunny", "cloudy", None], dtype=object), size=n),
            "mixed": rng.choice(np.array([True, 1, "1", 2.5, None], dtype=object), size=n),
            "temp": rng.normal(size=n),
            "wind": rng.choice([1.0, np.nan, 3.0], size=n),
            "rain": rng.choice([0, 1, 2], size=n),
        }
    )


@pytest.mark.parametrize("partition", [{"region": "city"}, {"partition": "iid", "num_regions": 5}])
def test_categorical_features_and_integer_classes(make_cfg, tmp_path, partition):
    _weather().to_csv(tmp_path / "w.csv", index=False)
    cfg = make_cfg(source="csv:w.csv", target="rain", task="classification", **partition)
    _assert_equal_everywhere(cfg)
    stats = region_stats(cfg, list_regions(cfg)[0])
    assert set(stats.vocab) >= {"sky", "mixed"} and stats.labels


def test_dirichlet_partition_and_string_classes(make_cfg, tmp_path):
    frame = _weather(400)
    frame["rain"] = frame["rain"].map({0: "dry", 1: "drizzle", 2: "storm"})
    frame["temp"] = frame["temp"].astype("float32")  # kept float32 by the cleaning
    frame[["sky", "temp", "wind", "rain"]].to_parquet(tmp_path / "w.parquet")
    cfg = make_cfg(
        source="parquet:w.parquet",
        target="rain",
        task="classification",
        partition="dirichlet",
        num_regions=4,
        alpha=0.3,
        features=["sky", "temp", "wind"],
    )
    _assert_equal_everywhere(cfg)


def test_synthetic_source(make_cfg):
    cfg = make_cfg(source="synthetic:fedprox", task="classification", num_regions=6)
    _assert_equal_everywhere(cfg)


def test_a_regions_own_file_takes_the_per_region_path(make_cfg, tmp_path):
    _weather().query("city == 'Oslo'").to_csv(tmp_path / "oslo.csv", index=False)
    cfg = make_cfg(source="csv:oslo.csv", region="city", target="rain", task="classification")
    path = str(tmp_path / "oslo.csv")
    fast = region_stats(cfg, "Oslo", data_path=path)
    assert fast == local_stats(load_region(cfg, "Oslo", data_path=path), cfg)


def test_unknown_region_is_the_load_region_error(gapminder_cfg):
    with pytest.raises(DataError, match="unknown region 'Atlantis'"):
        region_stats(gapminder_cfg, "Atlantis")
