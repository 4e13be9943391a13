"""FedBuff and FedAsync: hand-computed updates, FedAvg as a special case, state dicts.

The staleness each reply carries is the record the clock's driver
(fedglobal.geo.asynchronous) adds; here the tests add it themselves.
"""

from __future__ import annotations

from itertools import count

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

import strategies
from strategies import FedAvg
from strategies.asynchronous import ASYNC_RECORD, DISPATCHED_ROUND, FedAsync, FedBuff
from strategies.errors import AggregationError, InvalidParameterError
from strategies.staleness import buffered_step, fedasync_weight, fedbuff_weight, mix
from tests.strategies.helpers import NodesOnlyGrid, f32, numpy
from tests.strategies.helpers import to_record as record

pytestmark = pytest.mark.usefixtures("task_identity")
_ids = count(1)


def configure(strategy, server_round, arrays, idle):
    msgs = list(
        strategy.configure_train(server_round, record(arrays), ConfigRecord(), NodesOnlyGrid(idle))
    )
    for msg in msgs:
        msg.metadata.__dict__["_message_id"] = f"m{next(_ids)}"
    return {m.metadata.dst_node_id: m for m in msgs}


def reply(instruction, arrays, n, *, sent=None, **metrics):
    node = instruction.metadata.dst_node_id
    content = RecordDict(
        {
            "arrays": record(arrays),
            "metrics": MetricRecord({"num-examples": n, "loss": 1.0, **metrics}),
            "meta": ConfigRecord({"region": f"r{node}", "round": sent or 0}),
        }
    )
    if sent is not None:
        content[ASYNC_RECORD] = ConfigRecord({DISPATCHED_ROUND: sent})
    return Message(content, reply_to=instruction)


# ---- the maths, by hand -------------------------------------------------------------------


def test_staleness_functions_by_hand():
    assert fedbuff_weight(0) == 1.0
    assert fedbuff_weight(3) == 0.5  # 1 / sqrt(4)
    assert fedasync_weight(7, "constant") == 1.0
    assert fedasync_weight(3, "polynomial", a=0.5) == 0.5  # (3 + 1) ** -0.5
    assert fedasync_weight(0, "polynomial", a=0.5) == 1.0
    assert fedasync_weight(4, "hinge", a=10, b=4) == 1.0
    assert fedasync_weight(6, "hinge", a=10, b=4) == pytest.approx(1 / 21)  # 1/(10*2+1)
    with pytest.raises(InvalidParameterError, match="staleness must be"):
        fedbuff_weight(-1)
    with pytest.raises(InvalidParameterError, match="constant, polynomial, hinge"):
        fedasync_weight(1, "linear")


def test_buffered_step_by_hand():
    current = {"w": f32(1, 2)}
    updates = [
        ("a", {"w": f32(2, 2)}, {"w": f32(1, 2)}, 1.0, 1.0),  # delta (1, 0), s = 0
        ("b", {"w": f32(0, 4)}, {"w": f32(0, 2)}, 3.0, 0.5),  # delta (0, 2), s = 3
    ]
    # sum n w delta = (1, 0) + 3 * 0.5 * (0, 2) = (1, 3); / sum n = 4 -> (0.25, 0.75); lr 2
    out = buffered_step(current, updates, server_lr=2.0)
    np.testing.assert_array_equal(out["w"], f32(1.5, 3.5))
    assert out["w"].dtype == np.float32
    with pytest.raises(AggregationError, match="no update"):
        buffered_step(current, [])
    with pytest.raises(AggregationError, match="client 'c'"):
        buffered_step(current, [("c", {"v": f32(0, 0)}, current, 1.0, 1.0)])


def test_mix_by_hand():
    out = mix({"w": f32(0, 10)}, {"w": f32(10, 0)}, 0.3)
    np.testing.assert_allclose(out["w"], f32(3, 7))
    with pytest.raises(InvalidParameterError):
        mix({"w": f32(0)}, {"w": f32(1)}, 1.5)


# ---- the strategies with real flwr Messages ------------------------------------------------

START = {"w": f32(0.5, -0.5), "b": f32(0)}


def test_fedbuff_golden_steps_with_staleness():
    """Two regions; r1 arrives in step 1, r2 (sent in step 1) only in step 2: staleness 1."""
    strategy = FedBuff(buffer_size=1, server_learning_rate=1.0)
    sent = configure(strategy, 1, START, [1, 2])
    assert sorted(sent) == [1, 2] and strategy.in_flight == 2
    new, metrics = strategy.aggregate_train(
        1, [reply(sent[1], {"w": f32(1.5, 0.5), "b": f32(2)}, 2, sent=1)]
    )
    step1 = numpy(new)  # staleness 0, one update: x + (y - x) = y
    np.testing.assert_array_equal(step1["w"], f32(1.5, 0.5))
    assert metrics["staleness"] == 0  # Flower's default metric aggregation sees it too
    again = configure(strategy, 2, step1, [1])  # r1 is idle again, r2 still training
    assert sorted(again) == [1] and strategy.in_flight == 2
    # r2 trained from START (sent in step 1): delta = y - START = (1, 1), (2); w = 1/sqrt(2)
    new, _ = strategy.aggregate_train(
        2, [reply(sent[2], {"w": f32(1.5, 0.5), "b": f32(2)}, 4, sent=1)]
    )
    step2 = numpy(new)
    scale = 1 / np.sqrt(2)
    np.testing.assert_allclose(step2["w"], f32(1.5 + scale, 0.5 + scale), rtol=1e-6)
    np.testing.assert_allclose(step2["b"], f32(2 + 2 * scale), rtol=1e-6)
    assert strategy.in_flight == 1 and sorted(strategy._versions) == [2]  # START is forgotten


def test_fedbuff_with_k_all_no_staleness_lr_1_is_fedavg():
    rounds = [
        [({"w": f32(1, 2), "b": f32(0.3)}, 1), ({"w": f32(4, 8), "b": f32(-1)}, 3)],
        [({"w": f32(-1, 0.5), "b": f32(2)}, 2), ({"w": f32(0.1, 1 / 3), "b": f32(1e-8)}, 5)],
    ]
    fedbuff = FedBuff(buffer_size=2, server_learning_rate=1.0)
    fedavg = FedAvg()
    a = b = START
    for r, updates in enumerate(rounds, start=1):
        out = []
        for strategy, current in ((fedbuff, a), (fedavg, b)):
            sent = configure(strategy, r, current, [1, 2])
            replies = [
                reply(sent[i + 1], u, n, sent=r if strategy is fedbuff else None)
                for i, (u, n) in enumerate(updates)
            ]
            out.append(numpy(strategy.aggregate_train(r, replies)[0]))
        a, b = out
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7)


def test_fedasync_golden_mixing():
    strategy = FedAsync(alpha=0.6, staleness="polynomial", staleness_a=0.5)
    sent = configure(strategy, 1, {"w": f32(0, 10)}, [1, 2])
    assert strategy.arrivals_per_step == 1
    new, _ = strategy.aggregate_train(1, [reply(sent[1], {"w": f32(10, 0)}, 5, sent=1)])
    step1 = numpy(new)  # staleness 0: a = 0.6 -> (6, 4)
    np.testing.assert_allclose(step1["w"], f32(6, 4), rtol=1e-6)
    configure(strategy, 2, step1, [1])
    configure(strategy, 3, step1, [])
    new, _ = strategy.aggregate_train(4, [reply(sent[2], {"w": f32(0, 0)}, 5, sent=1)])
    # staleness 3: a = 0.6 * (3 + 1) ** -0.5 = 0.3 -> 0.7 * (6, 4)
    np.testing.assert_allclose(numpy(new)["w"], f32(4.2, 2.8), rtol=1e-6)


def test_replies_carry_their_staleness_and_aggregating_round_into_the_metrics():
    seen = []

    def metrics_fn(records, key):
        seen.extend((r["meta"]["round"], r["metrics"]["staleness"]) for r in records)
        return MetricRecord({})

    strategy = FedBuff(buffer_size=2, train_metrics_aggr_fn=metrics_fn)
    sent = configure(strategy, 1, START, [1, 2])
    configure(strategy, 2, START, [])
    configure(strategy, 3, START, [])
    strategy.aggregate_train(
        3, [reply(sent[1], START, 1, sent=1), reply(sent[2], START, 1, sent=1)]
    )
    assert seen == [(3, 2), (3, 2)]


def test_state_dict_mid_flight_resumes_the_same_trajectory():
    def steps(strategy, start, until):
        sent = configure(strategy, 1, START, [1, 2])
        new = numpy(
            strategy.aggregate_train(1, [reply(sent[1], {"w": f32(1, 1), "b": f32(1)}, 2, sent=1)])[
                0
            ]
        )
        if until == 1:
            return new, sent
        return finish(strategy, new, sent)

    def finish(strategy, current, sent):
        configure(strategy, 2, current, [1])
        return numpy(
            strategy.aggregate_train(
                2, [reply(sent[2], {"w": f32(3, -1), "b": f32(0)}, 1, sent=1)]
            )[0]
        )

    straight = steps(FedBuff(buffer_size=1, server_learning_rate=0.5), START, 2)
    first = FedBuff(buffer_size=1, server_learning_rate=0.5)
    current, sent = steps(first, START, 1)
    state = first.state_dict()
    assert state["outstanding"] == [[1, 1]] and list(state["versions"]) == ["1"]
    resumed = FedBuff(buffer_size=1, server_learning_rate=0.5)
    resumed.load_state_dict(state)
    again = finish(resumed, current, sent)
    for name in straight:
        np.testing.assert_array_equal(again[name], straight[name])


def test_concurrency_is_fraction_train_of_all_regions():
    strategy = FedBuff(buffer_size=1, fraction_train=0.5, seed=4)
    sent = configure(strategy, 1, START, [1, 2, 3, 4])
    assert len(sent) == 2  # ceil(0.5 * 4)
    assert configure(strategy, 2, START, [n for n in (1, 2, 3, 4) if n not in sent]) == {}


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("fedbuff", {"buffer_size": 0}, "buffer_size must be an int >= 1"),
        ("fedbuff", {"server_learning_rate": 0}, "server_learning_rate must be a number > 0"),
        ("fedbuff", {"weighting": "mean"}, "weighting must be"),
        ("fedasync", {"alpha": 0}, r"alpha must be a number in \(0, 1\]"),
        ("fedasync", {"staleness": "linear"}, "staleness must be one of"),
        ("fedasync", {"staleness_b": -1}, "staleness_b must be an int >= 0"),
    ],
)
def test_bad_parameters_are_one_clear_error(name, params, match):
    with pytest.raises(InvalidParameterError, match=match):
        strategies.get(name, **params)
