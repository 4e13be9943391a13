"""The simulated clock, computed by hand for three regions (no TensorFlow, no Flower)."""

from __future__ import annotations

import math

import pytest

from fedglobal.geo.availability import Window, parse_start
from fedglobal.geo.clock import AvailabilityError, SimClock, Work
from fedglobal.geo.network import great_circle_km
from fedglobal.geo.places import Place

# Server at (0, 0). A sits on it, B a quarter of the way round the equator, C half way.
# route_factor 1: rtt = 2 d / (2/3 c) = 3 d / c. Quarter circle: pi/2 * 6371.0088 km.
QUARTER_KM = math.pi / 2 * 6371.0088
RTT_B = 3 * QUARTER_KM / 299_792.458  # 0.100145 s
RTT_C = 2 * RTT_B
FLOPS = 1e9  # per step


def _places() -> dict[str, Place]:
    return {
        "A": Place("A", 0.0, 0.0, "Etc/GMT", 10.0, 40.0, 80.0, "test"),
        "B": Place("B", 0.0, 90.0, "Etc/GMT-6", 20.0, 40.0, 80.0, "test"),
        "C": Place("C", 0.0, 180.0, "Etc/GMT-12", 5.0, 20.0, 40.0, "test"),
    }


def _clock(**kwargs) -> SimClock:
    return SimClock(
        _places(), (0.0, 0.0), flops_per_step=FLOPS, route_factor=1.0, overhead_s=0.01, **kwargs
    )


# Every region downloads 1 MB and uploads 0.5 MB and runs 10 steps.
#   A: 0.01 + 0     + 8e6/80e6 = 0.11     | 10 x 1e9/10e9 = 1.0 | 0.01 + 0 + 4e6/40e6 = 0.11
#   B: 0.01 + RTT_B + 0.1      = 0.210145 | 10 x 0.05     = 0.5 | same as download
#   C: 0.01 + RTT_C + 8e6/40e6 = 0.410290 | 10 x 0.2      = 2.0 | 0.01 + RTT_C + 4e6/20e6
DOWN = {"A": 0.11, "B": 0.01 + RTT_B + 0.1, "C": 0.01 + RTT_C + 0.2}
COMPUTE = {"A": 1.0, "B": 0.5, "C": 2.0}
ARRIVED = {r: 2 * DOWN[r] + COMPUTE[r] for r in "ABC"}  # upload time = download time here


def _work(steps: dict[str, int] | None = None) -> list[Work]:
    steps = steps or {}
    return [Work(r, 1_000_000, 500_000, steps.get(r, 10), steps.get(r, 10) < 10) for r in "ABC"]


def test_the_constants_by_hand():
    assert great_circle_km(0, 0, 0, 90) == pytest.approx(10007.557, abs=1e-3)
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(2 * 10007.557, abs=1e-3)
    assert RTT_B == pytest.approx(0.100145, abs=1e-6)
    assert ARRIVED["A"] == pytest.approx(1.22)
    assert ARRIVED["B"] == pytest.approx(0.920290, abs=1e-6)
    assert ARRIVED["C"] == pytest.approx(2.820579, abs=1e-6)


def test_each_region_download_compute_upload():
    clock = _clock()
    clock.close_round(1, _work())
    rows = {r.region: r for r in clock.regions}
    for region in "ABC":
        assert rows[region].download_s == pytest.approx(DOWN[region], abs=1e-9)
        assert rows[region].compute_s == pytest.approx(COMPUTE[region], abs=1e-12)
        assert rows[region].upload_s == pytest.approx(DOWN[region], abs=1e-9)
        assert rows[region].arrived_s == pytest.approx(ARRIVED[region], abs=1e-9)


def test_sync_waits_for_the_last_region_and_rounds_follow_each_other():
    clock = _clock()
    first = clock.close_round(1, _work())
    assert (first.start_s, first.end_s) == (0.0, pytest.approx(ARRIVED["C"]))
    assert all(r.kept for r in clock.regions)
    second = clock.close_round(2, _work())
    assert second.start_s == pytest.approx(ARRIVED["C"])
    assert second.end_s == pytest.approx(2 * ARRIVED["C"])


def test_deadline_fits_partial_steps_and_ends_at_the_deadline():
    clock = _clock(policy="deadline", deadline_s=1.5)
    # C: 1.5 - 2 x 0.410290 = 0.679421 s left -> 3 steps of 0.2 s. A and B fit whole.
    assert clock.steps_within("C", 1_000_000, 500_000, 10) == 3
    assert clock.steps_within("A", 1_000_000, 500_000, 10) == 10
    span = clock.close_round(1, _work({"C": 3}))
    rows = {r.region: r for r in clock.regions}
    assert rows["C"].arrived_s == pytest.approx(2 * DOWN["C"] + 0.6)
    assert all(r.kept for r in rows.values())  # FedProx keeps the partial work
    assert span.end_s == pytest.approx(1.5)  # C was cut: the round lasts to the deadline


def test_deadline_drops_late_and_partial_replies_for_fedavg():
    clock = _clock(policy="deadline", deadline_s=1.5, drop_partial=True)
    clock.close_round(1, _work({"C": 3}))
    assert {r.region: r.kept for r in clock.regions} == {"A": True, "B": True, "C": False}
    late = _clock(policy="deadline", deadline_s=1.0)
    span = late.close_round(1, _work())  # A (1.22 s) and C (2.82 s) arrive too late
    assert {r.region: r.kept for r in late.regions} == {"A": False, "B": True, "C": False}
    assert span.end_s == pytest.approx(1.0)
    assert late.steps_within("C", 1_000_000, 500_000, 10) == 0  # 1.0 - 0.82 s < one 0.2 s step


def test_deadline_without_late_replies_ends_with_the_last_one():
    clock = _clock(policy="deadline", deadline_s=10.0)
    assert clock.close_round(1, _work()).end_s == pytest.approx(ARRIVED["C"])


def test_overcommit_keeps_the_first_m_to_arrive():
    clock = _clock(policy="overcommit", overcommit=1.5)
    span = clock.close_round(1, _work(), keep=2)
    assert {r.region: r.kept for r in clock.regions} == {"A": True, "B": True, "C": False}
    assert span.end_s == pytest.approx(ARRIVED["A"])  # the 2nd arrival: B 0.92, A 1.22


def test_a_failed_reply_is_timed_but_not_kept():
    clock = _clock()
    work = [Work("A", 1_000_000, None, 10), *_work()[1:]]
    clock.close_round(1, work)
    rows = {r.region: r for r in clock.regions}
    assert not rows["A"].kept and math.isnan(rows["A"].arrived_s)


def test_availability_window_makes_the_clock_skip_ahead():
    # Monday 00:00 UTC. Local times: A (UTC) 00:00, B (UTC+6) 06:00, C (UTC+12) 12:00.
    # Window 09:00-17:00: only C is open. Two regions are needed: B opens at 09:00
    # local = 03:00 UTC (10,800 s), when C (15:00 local) is still open.
    clock = _clock(window=Window.parse("09:00-17:00"), start_epoch=parse_start("2025-01-06T00:00Z"))
    assert clock.available("ABC") == ["C"]
    assert clock.wait_for("ABC", 2) == ["B", "C"]
    assert clock.now == pytest.approx(10_800.0)
    span = clock.close_round(1, [w for w in _work() if w.region != "A"])
    assert span.start_s == pytest.approx(10_800.0)
    assert span.waited_s == pytest.approx(10_800.0)
    # Three are never open at once: C closes (17:00 local = 05:00 UTC) before A opens
    # (09:00 UTC). That is one clear error, not a wait.
    with pytest.raises(AvailabilityError, match="fewer than 3 regions"):
        clock.wait_for("ABC", 3)
    assert clock.now == pytest.approx(span.end_s)  # the clock did not move


def test_same_inputs_same_clock():
    a, b = _clock(policy="overcommit", overcommit=1.5), _clock(policy="overcommit", overcommit=1.5)
    for server_round in (1, 2, 3):
        a.close_round(server_round, _work(), keep=2)
        b.close_round(server_round, _work(), keep=2)
    assert a.state_dict() == b.state_dict()
    c = _clock()
    c.load_state_dict(a.state_dict())
    assert c.now == a.now and c.regions == a.regions and c.rounds == a.rounds


def test_window_parsing_and_wrapping():
    night = Window.parse("22:00-06:00")
    monday = parse_start("2025-01-06T00:00:00Z")
    assert night.contains(monday, "Etc/GMT")
    assert not night.contains(monday + 12 * 3600, "Etc/GMT")
    assert night.contains(monday, "Europe/Berlin")  # 01:00 local
    assert not night.contains(monday, "America/New_York")  # 19:00 local, Sunday
    assert night.next_open(monday + 12 * 3600, "Etc/GMT") == monday + 22 * 3600
