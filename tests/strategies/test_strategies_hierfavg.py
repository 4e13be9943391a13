"""HierFAVG (Liu et al. 2020): hand-computed group and cloud averages, FedAvg as a
special case, state dicts, and how regions are grouped."""

from __future__ import annotations

from itertools import count

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

import strategies
from fedglobal.errors import ConfigError
from fedglobal.geo.hierarchy import region_groups
from strategies import FedAvg
from strategies.errors import InvalidParameterError
from strategies.hierfavg import HierFAVG
from tests.strategies.helpers import RegionGrid, f32, numpy
from tests.strategies.helpers import to_record as record

pytestmark = pytest.mark.usefixtures("task_identity")
_ids = count(1)


def configure(strategy, server_round, arrays, nodes):
    msgs = list(
        strategy.configure_train(server_round, record(arrays), ConfigRecord(), RegionGrid(nodes))
    )
    for msg in msgs:
        msg.metadata.__dict__["_message_id"] = f"m{next(_ids)}"
    return {m.metadata.dst_node_id: m for m in msgs}


def reply(instruction, arrays, n):
    node = instruction.metadata.dst_node_id
    content = RecordDict(
        {
            "arrays": record(arrays),
            "metrics": MetricRecord({"num-examples": n}),
            "meta": ConfigRecord({"region": f"r{node}"}),
        }
    )
    return Message(content, reply_to=instruction)


def train_round(strategy, server_round, current, answers):
    """``answers``: {node: (arrays, n)}; returns (what each node was sent, the new arrays)."""
    sent = configure(strategy, server_round, current, list(answers))
    replies = [reply(sent[n], a, w) for n, (a, w) in answers.items()]
    new, _ = strategy.aggregate_train(server_round, replies)
    return {n: numpy(m.content["arrays"]) for n, m in sent.items()}, new


START = {"w": f32(0, 0)}


def test_groups_every_round_cloud_every_second_round_by_hand():
    strategy = HierFAVG(cloud_every=2, min_train_clients=3, min_available_clients=3)
    strategy.set_groups({"r1": "A", "r2": "A", "r3": "B"})
    # round 1: A = (1*1 + 3*3) / 4 = 2.5; B = 0; not a cloud round: the global model stays
    sent, new = train_round(
        strategy,
        1,
        START,
        {1: ({"w": f32(1, 1)}, 1), 2: ({"w": f32(3, 3)}, 3), 3: ({"w": f32(0, 0)}, 4)},
    )
    assert new is None and all(np.array_equal(s["w"], START["w"]) for s in sent.values())
    # round 2: each region is sent its group's model; A = 2, B = 4; cloud = (4*2 + 4*4) / 8
    sent, new = train_round(
        strategy,
        2,
        START,
        {1: ({"w": f32(2, 2)}, 1), 2: ({"w": f32(2, 2)}, 3), 3: ({"w": f32(4, 4)}, 4)},
    )
    np.testing.assert_array_equal(sent[1]["w"], f32(2.5, 2.5))
    np.testing.assert_array_equal(sent[2]["w"], f32(2.5, 2.5))
    np.testing.assert_array_equal(sent[3]["w"], f32(0, 0))
    np.testing.assert_array_equal(numpy(new)["w"], f32(3, 3))
    # round 3: every group starts from the cloud's model
    sent, _ = train_round(strategy, 3, numpy(new), {n: ({"w": f32(0, 0)}, 1) for n in (1, 2, 3)})
    assert all(np.array_equal(s["w"], f32(3, 3)) for s in sent.values())
    report = strategy.report()["hierarchy"]
    # 8-byte model. Flat FedAvg: 3 messages + 3 replies a round, 3 rounds;
    # groups: 2 uploads + 2 downloads, once
    assert report["wan_bytes_flat_fedavg"] == 3 * 6 * 8
    assert report["wan_bytes"] == 2 * 2 * 8
    assert report["groups"] == {"A": ["r1", "r2"], "B": ["r3"]}


def test_one_group_cloud_every_round_is_fedavg_exactly():
    rounds = [
        {1: ({"w": f32(1, 2)}, 1), 2: ({"w": f32(4, 8)}, 3), 3: ({"w": f32(0.1, 1 / 3)}, 5)},
        {1: ({"w": f32(-1, 0.5)}, 2), 2: ({"w": f32(0.3, 1e-8)}, 5), 3: ({"w": f32(7, 7)}, 1)},
    ]
    hier = HierFAVG(cloud_every=1, min_train_clients=3)
    hier.set_groups({f"r{n}": "all" for n in (1, 2, 3)})
    fedavg = FedAvg(min_train_clients=3)
    a = b = {"w": f32(0.5, -0.5)}
    for r, answers in enumerate(rounds, start=1):
        a = numpy(train_round(hier, r, a, answers)[1])
        b = numpy(train_round(fedavg, r, b, answers)[1])
        np.testing.assert_array_equal(a["w"], b["w"])


def test_state_dict_between_cloud_rounds_resumes_the_same_trajectory():
    def make():
        s = HierFAVG(cloud_every=2, min_train_clients=2)
        s.set_groups({"r1": "A", "r2": "B"})
        return s

    first_round = {1: ({"w": f32(1, 2)}, 1), 2: ({"w": f32(4, 8)}, 3)}
    second_round = {1: ({"w": f32(2, 2)}, 2), 2: ({"w": f32(5, 1)}, 1)}
    straight = make()
    train_round(straight, 1, START, first_round)
    sent_straight, expected = train_round(straight, 2, START, second_round)
    saved = make()
    train_round(saved, 1, START, first_round)
    resumed = make()
    resumed.load_state_dict(saved.state_dict())
    sent_resumed, again = train_round(resumed, 2, START, second_round)
    for node in sent_straight:
        np.testing.assert_array_equal(sent_resumed[node]["w"], sent_straight[node]["w"])
    np.testing.assert_array_equal(numpy(again)["w"], numpy(expected)["w"])
    assert resumed.report() == straight.report()


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"cloud_every": 0}, "cloud_every must be an int >= 1"),
        ({"group_by": "country"}, "group_by must be 'continent', 'geo' or 'column:NAME'"),
        ({"group_by": "column:"}, "group_by must be"),
    ],
)
def test_bad_parameters_are_one_clear_error(params, match):
    with pytest.raises(InvalidParameterError, match=match):
        strategies.get("hierfavg", **params)


# ---- grouping ---------------------------------------------------------------------------


def test_group_by_continent_from_the_names():
    groups = region_groups("continent", ["Germany", "France", "Japan", "Western Africa"])
    assert groups == {
        "Germany": "Europe",
        "France": "Europe",
        "Japan": "Asia",
        "Western Africa": "Africa",
    }
    with pytest.raises(ConfigError, match="no place for 'Xyzzyland'"):
        region_groups("continent", ["Germany", "Xyzzyland"])


def test_group_by_the_geo_table_names_every_mistake():
    table = {"north": ["a", "b"], "south": ["c"]}
    assert region_groups("geo", ["a", "b", "c"], table=table) == {
        "a": "north",
        "b": "north",
        "c": "south",
    }
    with pytest.raises(ConfigError) as caught:
        region_groups("geo", ["a", "b", "c", "d"], table={"north": ["a", "b"], "south": ["b", "x"]})
    message = str(caught.value)
    assert "'b' is in 'north' and 'south'" in message
    assert "not regions of the data: 'x'" in message and "in no group: 'c', 'd'" in message
    with pytest.raises(ConfigError, match=r"needs a \[geo.groups\] table"):
        region_groups("geo", ["a"], table={})


def test_group_by_a_categorical_column_constant_in_each_region():
    vocab = {"a": {"zone": ["n"]}, "b": {"zone": ["n"]}, "c": {"zone": ["s"]}}
    assert region_groups("column:zone", ["a", "b", "c"], vocab=vocab) == {
        "a": "n",
        "b": "n",
        "c": "s",
    }
    with pytest.raises(ConfigError, match="one value in each region: 'c' has 2 values"):
        region_groups("column:zone", ["a", "c"], vocab={**vocab, "c": {"zone": ["n", "s"]}})
    with pytest.raises(ConfigError, match="'kind' is not a categorical feature"):
        region_groups("column:kind", ["a"], vocab=vocab)
