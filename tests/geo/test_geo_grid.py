"""The clock's Grid view: availability, deadline steps, overcommit, byte sizes (real Messages)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedglobal.geo.availability import Window, parse_start
from fedglobal.geo.clock import SimClock
from fedglobal.geo.grid import GeoRounds
from fedglobal.geo.places import Place
from fedglobal.protocol import to_record
from fedglobal.server.comm import CountingGrid, message_bytes

REGIONS = {1: "A", 2: "B", 3: "C", 4: "D"}


class ReplyingGrid(Grid):
    """A Grid whose nodes reply at once: arrays of the size they were sent, their region."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def set_run(self, run):  # pragma: no cover - not used
        pass

    @property
    def run(self):  # pragma: no cover - not used
        return None

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type)  # pragma: no cover

    def get_node_ids(self):
        return list(REGIONS)

    def push_messages(self, messages):  # pragma: no cover - not used
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover - not used
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in messages:
            self.sent.append(message)
            node = message.metadata.dst_node_id
            content = RecordDict(
                {
                    "arrays": message.content["arrays"],
                    "metrics": MetricRecord({"num-examples": 10}),
                    "meta": ConfigRecord({"region": REGIONS[node]}),
                }
            )
            reply = Message(content, reply_to=message)
            reply.metadata.__dict__["_src_node_id"] = node
            replies.append(reply)
        return replies


def _place(name: str, lon: float, zone: str, compute: float) -> Place:
    return Place(name, 0.0, lon, zone, compute, 100.0, 100.0, "test")


def _rounds(policy: str, **kwargs) -> tuple[GeoRounds, CountingGrid, ReplyingGrid]:
    places = {
        "A": _place("A", 0.0, "Etc/GMT", 100.0),
        "B": _place("B", 60.0, "Etc/GMT-4", 50.0),
        "C": _place("C", 120.0, "Etc/GMT-8", 10.0),
        "D": _place("D", -60.0, "Etc/GMT+4", 1.0),
    }
    window = kwargs.pop("window", None)
    clock = SimClock(
        places,
        (0.0, 0.0),
        flops_per_step=1e9,
        policy=policy,
        window=window,
        start_epoch=parse_start("2025-01-06T00:00Z"),
        **kwargs,
    )
    inner = ReplyingGrid()
    counting = CountingGrid(inner)
    rounds = GeoRounds(
        clock,
        region_of=lambda node: REGIONS[node],
        full_steps={"A": 20, "B": 20, "C": 20, "D": 20},
        needed=2,
        seed=7,
        reply_bytes=lambda: counting.last_reply_bytes,
    )
    return rounds, counting, inner


def _train(nodes: list[int], server_round: int = 1) -> list[Message]:
    arrays = to_record({"w": np.zeros((100, 100), dtype=np.float32)})
    config = ConfigRecord({"server-round": server_round})
    return [
        Message(RecordDict({"arrays": arrays, "config": config}), node, MessageType.TRAIN)
        for node in nodes
    ]


def test_sync_times_the_round_from_the_counted_bytes(task_identity):
    rounds, counting, inner = _rounds("sync")
    view = rounds.for_round(1, counting)
    replies = list(view.send_and_receive(_train([1, 2, 3, 4])))
    assert len(replies) == 4
    rows = {r.region: r for r in rounds.clock.regions}
    sent_bytes = message_bytes(inner.sent[0])[0]
    for region in "ABCD":
        link = rounds.clock.links[region]
        assert rows[region].download_s == pytest.approx(link.download_s(sent_bytes))
        node = next(n for n, r in REGIONS.items() if r == region)
        assert rows[region].upload_s == pytest.approx(
            link.upload_s(counting.last_reply_bytes[node])
        )
        assert rows[region].steps == 20
    # D computes at 1 GFLOP/s: 20 steps of 1e9 FLOPs = 20 s, the slowest.
    assert rounds.clock.span(1).end_s == pytest.approx(rows["D"].arrived_s)


def test_deadline_sends_the_steps_that_fit(task_identity):
    rounds, counting, inner = _rounds("deadline", deadline_s=2.0)
    replies = list(rounds.for_round(1, counting).send_and_receive(_train([1, 2, 3, 4])))
    steps = {
        REGIONS[m.metadata.dst_node_id]: m.content["config"].get("local-steps") for m in inner.sent
    }
    # 20 steps take A 0.2 s, B 0.4 s, C 2 s, D 20 s (plus ~0.02 s, 0.29 s, 0.55 s, 0.29 s
    # of transfer): A and B fit, C and D get the steps that fit (C 14, D 1).
    assert steps["A"] is None and steps["B"] is None
    assert (steps["C"], steps["D"]) == (14, 1)
    assert all(r.arrived_s <= 2.0 for r in rounds.clock.regions)
    assert len(replies) == 4  # partial work kept (FedProx): drop_partial is False
    assert rounds.clock.span(1).end_s == pytest.approx(2.0)


def test_overcommit_sends_more_and_returns_the_first_m(task_identity):
    rounds, counting, inner = _rounds("overcommit", overcommit=1.5)
    replies = list(rounds.for_round(1, counting).send_and_receive(_train([1, 2])))
    assert len(inner.sent) == 3  # ceil(1.5 x 2)
    assert len(replies) == 2
    kept = {REGIONS[r.metadata.src_node_id] for r in replies}
    timed = sorted(rounds.clock.regions, key=lambda r: r.arrived_s)
    assert kept == {r.region for r in timed[:2]}
    again, counting2, inner2 = _rounds("overcommit", overcommit=1.5)
    list(again.for_round(1, counting2).send_and_receive(_train([1, 2])))
    assert [m.metadata.dst_node_id for m in inner2.sent] == [
        m.metadata.dst_node_id for m in inner.sent
    ]  # the extra region derives from (seed, round)


def test_only_available_regions_are_offered_and_the_clock_skips(task_identity):
    # 09:00-17:00 local at Monday 00:00 UTC: C (08:00, UTC+8) is closed, B (04:00) too,
    # A (00:00) too, D (Sunday 20:00) too. B opens at 05:00 UTC, C at 01:00 UTC:
    # two regions (B and C) are open from 05:00 UTC.
    rounds, counting, _ = _rounds("sync", window=Window.parse("09:00-17:00"))
    view = rounds.for_round(1, counting)
    nodes = list(view.get_node_ids())
    assert [REGIONS[n] for n in nodes] == ["B", "C"]
    assert rounds.clock.now == pytest.approx(5 * 3600.0)
    view.send_and_receive(_train(nodes))
    span = rounds.clock.span(1)
    assert span.start_s == pytest.approx(5 * 3600.0) and span.waited_s == pytest.approx(5 * 3600.0)


def test_evaluate_messages_pass_through_untimed(task_identity):
    rounds, counting, _ = _rounds("sync")
    messages = _train([1, 2])
    evaluate = [Message(m.content, m.metadata.dst_node_id, MessageType.EVALUATE) for m in messages]
    assert len(list(rounds.for_round(1, counting).send_and_receive(evaluate))) == 2
    assert rounds.clock.regions == [] and rounds.clock.now == 0.0
