"""encode_region: the whole source encoded once and sliced == per-region encoding."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedglobal.data import (
    encode,
    encode_region,
    list_regions,
    load_region,
    local_stats,
    merge_stats,
)
from fedglobal.errors import DataError

FIELDS = ("x_train", "y_train", "x_test", "y_test")


def _schema(cfg):
    return merge_stats([local_stats(load_region(cfg, r), cfg) for r in list_regions(cfg)], cfg)


def test_sliced_arrays_equal_per_region_encoding(gapminder_cfg):
    """gapminder: missing values (imputed + indicators), log features, every region."""
    schema = _schema(gapminder_cfg)
    assert schema.indicators  # the test covers imputation
    for region in list_regions(gapminder_cfg):
        fast = encode_region(gapminder_cfg, region, schema)
        slow = encode(load_region(gapminder_cfg, region), schema)
        assert fast.region == region
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
            assert getattr(fast, field).dtype == getattr(slow, field).dtype


def test_categorical_features_and_classes(make_cfg, tmp_path):
    rng = np.random.default_rng(0)
    n = 90
    frame = pd.DataFrame(
        {
            "city": np.repeat(["Lima", "Oslo", "Pune"], n // 3),
            "sky": rng.choice(["sunny", "cloudy", None], size=n),
            "temp": rng.normal(size=n),
            "rain": rng.choice(["yes", "no"], size=n),
        }
    )
    frame.to_csv(tmp_path / "w.csv", index=False)
    cfg = make_cfg(source="csv:w.csv", region="city", target="rain", task="classification")
    schema = _schema(cfg)
    for region in list_regions(cfg):
        fast, slow = encode_region(cfg, region, schema), encode(load_region(cfg, region), schema)
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))


def test_a_label_no_train_split_has_falls_back_and_names_its_region(make_cfg, tmp_path):
    """'hail' only in one region's test rows: the whole-source encoding fails, so every
    region takes the per-region path: the others encode, that region's error names it."""
    n = 60
    frame = pd.DataFrame(
        {
            "city": np.repeat(["Lima", "Oslo"], n // 2),
            "temp": np.arange(n, dtype=float),
            "rain": np.tile(["yes", "no"], n // 2),
        }
    )
    frame.to_csv(tmp_path / "w.csv", index=False)
    cfg = make_cfg(source="csv:w.csv", region="city", target="rain", task="classification")
    schema = _schema(cfg)
    first_test_temp = float(load_region(cfg, "Lima").test["temp"].iloc[0])  # unique per row
    frame.loc[frame["temp"] == first_test_temp, "rain"] = "hail"
    frame.to_csv(tmp_path / "w.csv", index=False)
    cfg = make_cfg(source="csv:w.csv", region="city", target="rain", task="classification")
    with pytest.raises(DataError, match=r"region 'Lima' \(test\): label 'hail'"):
        encode_region(cfg, "Lima", schema)
    oslo = encode_region(cfg, "Oslo", schema)
    np.testing.assert_array_equal(oslo.y_train, encode(load_region(cfg, "Oslo"), schema).y_train)


def test_unknown_region_is_the_load_region_error(gapminder_cfg):
    schema = _schema(gapminder_cfg)
    with pytest.raises(DataError, match="unknown region 'Atlantis'"):
        encode_region(gapminder_cfg, "Atlantis", schema)


def test_whole_source_encoded_in_chunks_equals_per_region(make_cfg, gapminder, monkeypatch):
    import fedglobal.data.encoded as encoded

    monkeypatch.setattr(encoded, "ENCODE_CHUNK_ROWS", 7)  # many chunks, a ragged last one
    cfg = make_cfg(seed=7, **gapminder)  # a data key of its own: not cached by other tests
    schema = _schema(cfg)
    assert encoded._encoded_source(encoded.prepared_source(cfg), schema) is not None
    for region in list_regions(cfg):
        fast, slow = encode_region(cfg, region, schema), encode(load_region(cfg, region), schema)
        for field in FIELDS:
            np.testing.assert_array_equal(getattr(fast, field), getattr(slow, field))
