"""Strategy classes driven with real flwr Messages (no mocks)."""

from itertools import count

import numpy as np
import pytest
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)

from strategies import FedAvg, FedBN, FedPer, Layerwise
from strategies.errors import InvalidParameterError, LayerRuleError, NotEnoughClientsError
from strategies.sampling import sample_clients
from tests.strategies.helpers import NodesOnlyGrid, f32

_ids = count(1)


pytestmark = pytest.mark.usefixtures("task_identity")


def record(**arrays):
    return ArrayRecord({name.replace("__", "/"): Array(v) for name, v in arrays.items()})


def delivered(messages):
    """Give instructions a message id, as a Grid does on push."""
    messages = list(messages)
    for msg in messages:
        msg.metadata.__dict__["_message_id"] = f"m{next(_ids)}"
    return messages


def reply(instruction, region, arrays=None, num_examples=10, **metrics):
    content = RecordDict(
        {
            "metrics": MetricRecord({"num-examples": num_examples, **metrics}),
            "meta": ConfigRecord({"region": region}),
        }
    )
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content, reply_to=instruction)


def error_reply(instruction, reason="client crashed"):
    return Message(Error(code=3, reason=reason), reply_to=instruction)


GLOBAL = {"dense__kernel": f32(0, 0), "dense__bias": f32(0)}


def train_round(strategy, nodes=(11, 12, 13), server_round=1, config=None, arrays=None):
    grid = NodesOnlyGrid(nodes)
    arrays = arrays if arrays is not None else record(**GLOBAL)
    msgs = strategy.configure_train(server_round, arrays, config or ConfigRecord(), grid)
    return delivered(msgs)


# ---- FedAvg -------------------------------------------------------------------------------


def test_configure_train_messages_and_config_not_mutated():
    strategy = FedAvg(min_train_clients=2)
    config = ConfigRecord({"lr": 0.1})
    msgs = train_round(strategy, config=config)
    assert dict(config) == {"lr": 0.1}
    assert sorted(m.metadata.dst_node_id for m in msgs) == [11, 12, 13]
    sent = msgs[0].content
    assert sent["config"]["server-round"] == 1 and sent["config"]["lr"] == 0.1
    assert list(sent["arrays"].keys()) == ["dense/kernel", "dense/bias"]
    assert msgs[0].metadata.message_type == MessageType.TRAIN


def test_aggregate_train_golden_and_metrics():
    strategy = FedAvg()
    m1, m2 = train_round(strategy, nodes=(1, 2))
    replies = [
        reply(m1, "europe", record(dense__kernel=f32(1, 2), dense__bias=f32(0)), 1, loss=1.0),
        reply(m2, "asia", record(dense__kernel=f32(4, 8), dense__bias=f32(4)), 3, loss=2.0),
    ]
    arrays, metrics = strategy.aggregate_train(1, iter(replies))
    np.testing.assert_array_equal(arrays["dense/kernel"].numpy(), f32(3.25, 6.5))
    np.testing.assert_array_equal(arrays["dense/bias"].numpy(), f32(3))
    assert list(arrays.keys()) == ["dense/kernel", "dense/bias"]
    assert metrics["loss"] == pytest.approx(1.75)
    assert strategy.rejected == [] and strategy.failures == []


def test_one_client_fedavg_is_exact():
    strategy = FedAvg(min_train_clients=1, min_available_clients=1)
    (msg,) = train_round(strategy, nodes=(5,))
    weights = record(dense__kernel=f32(0.1, 1 / 3), dense__bias=f32(7e-8))
    arrays, _ = strategy.aggregate_train(1, [reply(msg, "oceania", weights, 123)])
    for name in weights:
        np.testing.assert_array_equal(arrays[name].numpy(), weights[name].numpy())


@pytest.mark.parametrize(
    ("bad_arrays", "num_examples", "reason"),
    [
        ({"dense__kernel": f32(1, np.nan), "dense__bias": f32(0)}, 5, "NaN"),
        ({"dense__kernel": f32(1, 2, 3), "dense__bias": f32(0)}, 5, "shape"),
        ({"dense__kernel": f32(1, 2)}, 5, "missing"),
        ({"dense__kernel": np.array([1, 2]), "dense__bias": f32(0)}, 5, "dtype"),
        ({"dense__kernel": f32(1, 2), "dense__bias": f32(0)}, 0, "num-examples"),
        ({"dense__kernel": f32(1, 2), "dense__bias": f32(0)}, -3, "num-examples"),
    ],
)
def test_bad_reply_rejected_others_aggregated(bad_arrays, num_examples, reason):
    strategy = FedAvg()
    m1, m2, m3 = train_round(strategy, server_round=4)
    replies = [
        reply(m1, "europe", record(dense__kernel=f32(1, 2), dense__bias=f32(0)), 1),
        reply(m2, "africa", record(**bad_arrays), num_examples),
        reply(m3, "asia", record(dense__kernel=f32(4, 8), dense__bias=f32(4)), 3),
    ]
    arrays, metrics = strategy.aggregate_train(4, replies)
    np.testing.assert_array_equal(arrays["dense/kernel"].numpy(), f32(3.25, 6.5))
    assert metrics is not None
    (entry,) = strategy.rejected
    assert entry["round"] == 4 and entry["region"] == "africa" and entry["node"] == 12
    assert reason in entry["reason"] and "africa" in entry["reason"]


def test_reply_without_metrics_or_arrays_rejected():
    strategy = FedAvg()
    m1, m2, m3 = train_round(strategy)
    no_metrics = Message(RecordDict({"arrays": record(**GLOBAL)}), reply_to=m2)
    replies = [
        reply(m1, "europe", record(**GLOBAL)),
        no_metrics,
        reply(m3, "asia", None),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert [r["region"] for r in strategy.rejected] == ["node 12", "asia"]
    assert "'metrics'" in strategy.rejected[0]["reason"]
    assert "'arrays'" in strategy.rejected[1]["reason"]


def test_error_replies_recorded_as_failures():
    strategy = FedAvg()
    m1, m2 = train_round(strategy, nodes=(1, 2))
    replies = [reply(m1, "europe", record(**GLOBAL), 2), error_reply(m2, "OOM")]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    (entry,) = strategy.failures
    assert entry["node"] == 2 and entry["region"] == "node 2" and "OOM" in entry["reason"]


def test_failure_uses_region_seen_before():
    strategy = FedAvg()
    (m1, m2) = train_round(strategy, nodes=(1, 2))
    strategy.aggregate_train(
        1, [reply(m1, "europe", record(**GLOBAL)), reply(m2, "asia", record(**GLOBAL))]
    )
    (m1, m2) = train_round(strategy, nodes=(1, 2), server_round=2)
    strategy.aggregate_train(2, [reply(m1, "europe", record(**GLOBAL)), error_reply(m2)])
    assert strategy.failures[0]["region"] == "asia"


def test_no_valid_reply_returns_none():
    strategy = FedAvg()
    m1, m2 = train_round(strategy, nodes=(1, 2))
    bad = record(dense__kernel=f32(np.inf, 0), dense__bias=f32(0))
    assert strategy.aggregate_train(1, [error_reply(m1), reply(m2, "asia", bad)]) == (None, None)
    assert strategy.aggregate_train(1, []) == (None, None)


def test_aggregate_evaluate():
    strategy = FedAvg()
    grid = NodesOnlyGrid([1, 2, 3])
    config = ConfigRecord()
    m1, m2, m3 = delivered(strategy.configure_evaluate(2, record(**GLOBAL), config, grid))
    assert m1.metadata.message_type == MessageType.EVALUATE
    assert m1.content["config"]["server-round"] == 2 and "server-round" not in config
    replies = [
        reply(m1, "europe", num_examples=1, accuracy=0.5),
        reply(m2, "asia", num_examples=3, accuracy=1.0),
        reply(m3, "africa", num_examples=float("nan"), accuracy=0.0),
    ]
    metrics = strategy.aggregate_evaluate(2, replies)
    assert metrics["accuracy"] == pytest.approx(0.875)
    assert strategy.rejected[0]["stage"] == "evaluate"
    assert strategy.aggregate_evaluate(2, [error_reply(m1)]) is None


# ---- sampling -------------------------------------------------------------------------------


def test_sampling_deterministic_by_seed_and_round():
    nodes = list(range(100, 140))
    strategy = FedAvg(fraction_train=0.25, seed=3)
    first = [m.metadata.dst_node_id for m in train_round(strategy, nodes, 5)]
    again = [
        m.metadata.dst_node_id
        for m in train_round(FedAvg(fraction_train=0.25, seed=3), nodes[::-1], 5)
    ]
    other = [m.metadata.dst_node_id for m in train_round(strategy, nodes, 6)]
    assert len(first) == 10 and first == again and first != other


def test_sample_clients_helper():
    kwargs = {"fraction": 0.5, "minimum": 2, "seed": 0, "stream": 0}
    a = sample_clients(range(10), server_round=1, **kwargs)
    assert a == sample_clients(reversed(range(10)), server_round=1, **kwargs)
    assert len(a) == 5 and a == sorted(a)
    rounds = {tuple(sample_clients(range(10), server_round=r, **kwargs)) for r in range(1, 6)}
    assert len(rounds) > 1
    assert sample_clients(range(10), server_round=1, fraction=0.5, minimum=2, seed=0, stream=1) != a
    assert (
        len(sample_clients(range(3), server_round=1, fraction=0.1, minimum=2, seed=0, stream=0))
        == 2
    )


def test_not_enough_clients_times_out():
    strategy = FedAvg(min_available_clients=3, wait_timeout=0.2)
    with pytest.raises(NotEnoughClientsError, match="3 required, 2 connected"):
        strategy.configure_train(1, record(**GLOBAL), ConfigRecord(), NodesOnlyGrid([1, 2]))


def test_fraction_zero_skips():
    strategy = FedAvg(fraction_evaluate=0.0)
    assert strategy.configure_evaluate(1, record(**GLOBAL), ConfigRecord(), NodesOnlyGrid([])) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fraction_train": 1.5}, r"fraction_train.*\[0, 1\]"),
        ({"fraction_evaluate": -0.1}, r"fraction_evaluate.*\[0, 1\]"),
        ({"min_train_clients": -1}, "min_train_clients.*>= 0"),
        ({"min_available_clients": 2.5}, "min_available_clients.*int"),
        ({"seed": "x"}, "seed"),
        ({"wait_timeout": float("inf")}, "wait_timeout"),
        ({"train_metrics_aggr_fn": 3}, "callable"),
    ],
)
def test_constructor_validation(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        FedAvg(**kwargs)


def test_keyword_only():
    with pytest.raises(TypeError):
        FedAvg(0.5)


# ---- Layerwise ------------------------------------------------------------------------------

MODEL = {
    "dense__kernel": f32(0, 0),
    "batch_normalization__gamma": f32(1),
    "output__kernel": f32(9),
}


def test_layerwise_round_with_local_and_interval():
    strategy = Layerwise(
        layers=[
            {"match": "*batch_normalization*", "rule": "local"},
            {"match": "output/*", "rule": "uniform", "interval": 2},
        ]
    )
    config = ConfigRecord({"lr": 0.1})
    m1, m2 = train_round(strategy, nodes=(1, 2), config=config, arrays=record(**MODEL))
    assert m1.content["config"]["local-layers"] == ["batch_normalization/gamma", "output/kernel"]
    assert "local-layers" not in config
    updates = [
        record(
            dense__kernel=f32(1, 2), batch_normalization__gamma=f32(np.nan), output__kernel=f32(1)
        ),
        record(dense__kernel=f32(4, 8), batch_normalization__gamma=f32(3), output__kernel=f32(5)),
    ]
    replies = [reply(m1, "europe", updates[0], 1), reply(m2, "asia", updates[1], 3)]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert strategy.rejected == []  # NaN in a local layer is not the server's business
    np.testing.assert_array_equal(arrays["dense/kernel"].numpy(), f32(3.25, 6.5))
    np.testing.assert_array_equal(arrays["batch_normalization/gamma"].numpy(), f32(1))
    np.testing.assert_array_equal(arrays["output/kernel"].numpy(), f32(9))

    m1, m2 = train_round(strategy, nodes=(1, 2), server_round=2, arrays=arrays)
    assert m1.content["config"]["local-layers"] == ["batch_normalization/gamma"]
    updates[0]["batch_normalization/gamma"] = Array(f32(2))
    replies = [reply(m1, "europe", updates[0], 1), reply(m2, "asia", updates[1], 3)]
    arrays, _ = strategy.aggregate_train(2, replies)
    np.testing.assert_array_equal(arrays["output/kernel"].numpy(), f32(3))
    np.testing.assert_array_equal(arrays["batch_normalization/gamma"].numpy(), f32(1))

    grid = NodesOnlyGrid([1, 2])
    (e1, _) = strategy.configure_evaluate(3, arrays, ConfigRecord(), grid)
    assert e1.content["config"]["local-layers"] == [
        "batch_normalization/gamma",
        "output/kernel",
    ]


def test_layerwise_frozen_keeps_server_value():
    strategy = Layerwise(layers=[{"match": "output/*", "rule": "frozen"}])
    m1, m2 = train_round(strategy, nodes=(1, 2), arrays=record(**MODEL))
    assert m1.content["config"]["local-layers"] == []
    upd = record(dense__kernel=f32(2, 2), batch_normalization__gamma=f32(5), output__kernel=f32(0))
    arrays, _ = strategy.aggregate_train(1, [reply(m1, "a", upd), reply(m2, "b", upd)])
    np.testing.assert_array_equal(arrays["output/kernel"].numpy(), f32(9))
    np.testing.assert_array_equal(arrays["batch_normalization/gamma"].numpy(), f32(5))


def test_layerwise_bind_errors():
    strategy = Layerwise(layers=[{"match": "*conv*", "rule": "local"}])
    with pytest.raises(LayerRuleError, match=r"'\*conv\*'.*'dense/kernel'"):
        strategy.bind(["dense/kernel", "dense/bias"])
    with pytest.raises(LayerRuleError, match=r"'\*conv\*'"):
        train_round(strategy)
    bound = Layerwise(layers=[{"match": "dense/*", "rule": "uniform"}]).bind(["dense/kernel"])
    with pytest.raises(LayerRuleError, match="bound variable names"):
        train_round(bound)


def test_presets():
    fedbn = FedBN()
    m1, _ = train_round(fedbn, nodes=(1, 2), arrays=record(**MODEL))
    assert m1.content["config"]["local-layers"] == ["batch_normalization/gamma"]
    fedper = FedPer(head="output/*")
    m1, _ = train_round(fedper, nodes=(1, 2), arrays=record(**MODEL))
    assert m1.content["config"]["local-layers"] == ["output/kernel"]
    with pytest.raises(InvalidParameterError, match="Layerwise"):
        FedPer(layers=[])
