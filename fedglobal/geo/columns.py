"""Places from the data's own columns: ``[geo] lat_column`` / ``lon_column``.

A region's place is the mean of its coordinate columns over its train rows. The
server computes it from the statistics every region already sends for
federated normalisation (:class:`fedglobal.data.LocalStats`: per numeric
feature, the sum and the count of non-missing values). So no row, and no
statistic beyond those, leaves a region: ``lat = sum/lat_column /
count/lat_column``, likewise for the longitude.

The mean is arithmetic, in degrees. For a region whose rows straddle the
antimeridian (longitudes near both +180 and -180) it lands on the far side of
the globe; give such a region its place in ``[geo.regions.NAME]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedglobal.geo.places import PlacesError

__all__ = ["column_places"]


def column_places(
    stats: Mapping[str, Any], lat_column: str, lon_column: str
) -> dict[str, tuple[float, float, str]]:
    """``{region: (lat, lon, source)}`` from each region's statistics.

    ``stats`` maps a region's name to its :class:`~fedglobal.data.LocalStats`
    (``sums``, ``counts``, ``features``, ``n_rows``).

    Raises:
        PlacesError: one line naming a column that is not a numeric feature, or
            regions whose means are outside ±90 / ±180. A region with no value in
            a column is left out (``build_places`` lists it).
    """
    problems: list[str] = []
    for key, column in (("lat_column", lat_column), ("lon_column", lon_column)):
        numeric = [r for r, s in stats.items() if column in s.sums]
        if stats and not numeric:
            features = next(iter(stats.values())).features
            kind = "not numeric" if column in features else "not a feature"
            problems.append(
                f"geo.{key} = {column!r} is {kind} (the coordinate columns must be numeric "
                f"features; features: {', '.join(features)})"
            )
    if problems:
        raise PlacesError("[geo]: " + "; ".join(problems))
    places: dict[str, tuple[float, float, str]] = {}
    outside: list[str] = []
    for region, s in stats.items():
        lat_n, lon_n = s.counts.get(lat_column, 0), s.counts.get(lon_column, 0)
        if lat_n == 0 or lon_n == 0:
            continue  # build_places names it among the regions without coordinates
        lat, lon = s.sums[lat_column] / lat_n, s.sums[lon_column] / lon_n
        if abs(lat) > 90.0 or abs(lon) > 180.0:
            outside.append(f"{region!r} ({lat:.6g}, {lon:.6g})")
            continue
        rows = min(lat_n, lon_n)
        source = (
            f"mean of the data's columns {lat_column!r} and {lon_column!r} over the region's "
            f"{rows} train rows (federated sums)"
        )
        places[region] = (lat, lon, source)
    if outside:
        problems.append(
            f"the means of geo.lat_column = {lat_column!r} and geo.lon_column = {lon_column!r} "
            f"are outside ±90, ±180 degrees for region(s) {', '.join(outside)}: are the columns "
            "latitude and longitude in degrees?"
        )
    if problems:
        raise PlacesError("[geo]: " + "; ".join(problems))
    return places
