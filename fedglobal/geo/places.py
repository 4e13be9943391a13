"""Where each region is: coordinates, time zone, compute and links.

A region's place comes, first match wins, from:

1. its ``[geo.regions.NAME]`` table (``lat``, ``lon``, ``timezone``, ``compute``,
   ``uplink_mbps``, ``downlink_mbps``; each key optional);
2. the ``[geo] table`` CSV (columns ``region, lat, lon`` and optionally
   ``timezone, compute, uplink_mbps, downlink_mbps``);
3. with ``lat_column`` / ``lon_column``, the federated means of those columns
   over the region's train rows (:mod:`fedglobal.geo.columns`);
4. with ``resolve = "names"``, the offline gazetteer
   (:mod:`fedglobal.geo.gazetteer`): country names, ISO codes, UN M49 region
   names, continents and cities.

A missing time zone is looked up from the coordinates with ``timezonefinder``
(offline; the IANA zone whose polygon contains the point), and falls back to
the nautical zone ``Etc/GMT±h`` of the longitude at sea. Missing compute and
bandwidth take ``[geo]``'s defaults. Each :class:`Place` records where its
coordinates came from (``source``), for summary.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fedglobal.geo.availability import WindowError, check_timezone
from fedglobal.geo.gazetteer import lookup

__all__ = ["TABLE_COLUMNS", "Place", "PlacesError", "build_places", "read_table", "server_point"]

TABLE_COLUMNS = ("region", "lat", "lon", "timezone", "compute", "uplink_mbps", "downlink_mbps")
_REQUIRED = ("region", "lat", "lon")


class PlacesError(ValueError):
    """Places that cannot be read or resolved (the message lists every one)."""


@dataclass(frozen=True)
class Place:
    """One region's place and resources."""

    region: str
    lat: float
    lon: float
    timezone: str
    compute: float  # GFLOP/s
    uplink_mbps: float  # region -> server
    downlink_mbps: float  # server -> region
    source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_table(path: str | Path) -> dict[str, dict[str, Any]]:
    """The rows of a places CSV by region, checked: every bad cell is named at once."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise PlacesError(f"file not found: {str(path)!r}")
    try:
        frame = pd.read_csv(path, dtype={"region": str, "timezone": str}, keep_default_na=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise PlacesError(f"{path}: not a readable CSV: {exc}") from None
    problems = []
    missing = [c for c in _REQUIRED if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in TABLE_COLUMNS]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    if unknown:
        problems.append(
            f"unknown column(s) {', '.join(map(repr, unknown))} "
            f"(allowed: {', '.join(TABLE_COLUMNS)})"
        )
    if problems:
        raise PlacesError(f"{path}: " + "; ".join(problems))
    rows: dict[str, dict[str, Any]] = {}
    for i, row in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        region = str(row["region"]).strip()
        where = f"line {i} ({region or 'no region'})"
        if not region:
            problems.append(f"{where}: empty region")
            continue
        if region in rows:
            problems.append(f"{where}: region listed twice")
        out: dict[str, Any] = {}
        for key, limit in (("lat", 90.0), ("lon", 180.0)):
            value = _number(row[key])
            if value is None or abs(value) > limit:
                problems.append(f"{where}: {key} = {row[key]!r} must be a number in ±{limit:g}")
            out[key] = value
        for key in ("compute", "uplink_mbps", "downlink_mbps"):
            if key in row and str(row[key]).strip() != "":
                value = _number(row[key])
                if value is None or value <= 0:
                    problems.append(f"{where}: {key} = {row[key]!r} must be a number > 0")
                out[key] = value
        zone = str(row.get("timezone", "")).strip()
        if zone:
            try:
                out["timezone"] = check_timezone(zone)
            except WindowError as exc:
                problems.append(f"{where}: {exc}")
        rows[region] = out
    if problems:
        raise PlacesError(f"{path}: " + "; ".join(problems))
    return rows


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@lru_cache(maxsize=4096)
def timezone_at(lat: float, lon: float) -> str:
    """The IANA zone at a point (``timezonefinder``); ``Etc/GMT±h`` at sea."""
    zone = _finder().timezone_at(lat=lat, lng=lon)
    if zone:
        return str(zone)
    hours = round(lon / 15.0)
    return "Etc/GMT" if hours == 0 else f"Etc/GMT{'-' if hours > 0 else '+'}{abs(hours)}"


@lru_cache(maxsize=1)
def _finder() -> Any:
    from timezonefinder import TimezoneFinder

    return TimezoneFinder(in_memory=True)


def build_places(
    regions: Sequence[str],
    geo: Any,
    columns: Mapping[str, tuple[float, float, str]] | None = None,
) -> dict[str, Place]:
    """Every region's :class:`Place` under ``geo`` (a :class:`~fedglobal.config.GeoConfig`).

    ``columns`` holds ``(lat, lon, source)`` per region from the data's own
    columns (:func:`fedglobal.geo.columns.column_places`), when ``geo`` names them.

    Raises:
        PlacesError: naming every region without coordinates, in one message.
    """
    table = read_table(geo.table) if geo.table else {}
    overrides: Mapping[str, Mapping[str, Any]] = geo.regions or {}
    places: dict[str, Place] = {}
    unresolved: list[str] = []
    for region in regions:
        merged: dict[str, Any] = {}
        source = ""
        entry = lookup(region) if geo.resolve == "names" else None
        if entry is not None:
            merged.update(lat=entry.lat, lon=entry.lon, timezone=entry.timezone)
            source = entry.source
        if columns and region in columns:
            lat, lon, source = columns[region]
            merged.update(lat=lat, lon=lon)
            merged.pop("timezone", None)  # the gazetteer's zone was for its own point
        if region in table:
            merged.update({k: v for k, v in table[region].items() if v is not None})
            source = f"table {Path(geo.table).name}"
        override = overrides.get(region, {})
        if override:
            if "lat" in override:
                source = f"[geo.regions.{region}]"
            merged.update(override)
        if "lat" not in merged or "lon" not in merged:
            unresolved.append(region)
            continue
        lat, lon = float(merged["lat"]), float(merged["lon"])
        places[region] = Place(
            region=region,
            lat=lat,
            lon=lon,
            timezone=str(merged.get("timezone") or timezone_at(lat, lon)),
            compute=float(merged.get("compute", geo.compute)),
            uplink_mbps=float(merged.get("uplink_mbps", geo.uplink_mbps)),
            downlink_mbps=float(merged.get("downlink_mbps", geo.downlink_mbps)),
            source=source,
        )
    unknown_overrides = sorted(set(overrides) - set(regions))
    problems = []
    if unresolved:
        how = (
            "not in geo.table, [geo.regions] or the gazetteer (country names, ISO codes, "
            "UN M49 regions, continents, cities)"
            if geo.resolve == "names"
            else "not in geo.table or [geo.regions] (or set geo.resolve = 'names')"
        )
        if getattr(geo, "lat_column", None):
            how = (
                f"no value in geo.lat_column = {geo.lat_column!r} or geo.lon_column = "
                f"{geo.lon_column!r} in its train rows, and {how}"
            )
        problems.append(f"no coordinates for region(s) {', '.join(map(repr, unresolved))}: {how}")
    if unknown_overrides:
        problems.append(
            f"[geo.regions] names region(s) the data does not have: "
            f"{', '.join(map(repr, unknown_overrides))} (regions: {', '.join(regions)})"
        )
    if problems:
        raise PlacesError("[geo]: " + "; ".join(problems))
    return places


def server_point(geo: Any, places: Mapping[str, Place]) -> tuple[float, float, str]:
    """The server's ``(lat, lon, source)``: given, a region's place, or a gazetteer name."""
    server = geo.server
    if isinstance(server, list | tuple):
        return float(server[0]), float(server[1]), "geo.server"
    if server in places:
        place = places[server]
        return place.lat, place.lon, f"region {server}"
    entry = lookup(str(server))
    if entry is None:
        raise PlacesError(
            f"[geo]: geo.server = {server!r} is neither [lat, lon], a region "
            f"({', '.join(places)}) nor a name the gazetteer knows"
        )
    return entry.lat, entry.lon, entry.source
