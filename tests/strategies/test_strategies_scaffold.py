"""SCAFFOLD (Karimireddy et al. 2020) driven with real flwr Messages: the server's control
variate, golden updates, FedAvg's first round, its state dict; the client's correction and
control-variate update on Keras ``fit`` and in cohort training."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord

from strategies import FedAvg, Scaffold
from strategies.client_metrics import LOCAL_STEPS, REPORT_KEY
from strategies.errors import InvalidParameterError
from strategies.scaffold import CONTROL_KEY, DELTA_KEY
from tests.strategies.test_strategies_catalogue import configure, numpy, reply, to_record

pytestmark = pytest.mark.usefixtures("task_identity")


def f32(*values):
    return np.array(values, dtype=np.float32)


def scaffold_round(strategy, server_round, current, updates, deltas, weights, nodes):
    msgs = configure(strategy, server_round, current, nodes)
    replies = []
    for i, (msg, update, delta, weight) in enumerate(
        zip(msgs, updates, deltas, weights, strict=False)
    ):
        answer = reply(msg, f"r{i}", update, weight)
        if delta is not None:
            answer.content[DELTA_KEY] = to_record(delta)
        replies.append(answer)
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return msgs, None if arrays is None else numpy(arrays)


def test_messages_carry_c_and_ask_for_the_steps():
    strategy = Scaffold(min_train_clients=1, min_available_clients=1)
    (msg,) = configure(strategy, 1, {"w": f32(1)}, [1])
    assert list(msg.content["config"][REPORT_KEY]) == [LOCAL_STEPS]
    assert len(msg.content[CONTROL_KEY]) == 0  # round 1: c = 0, sent as no arrays
    strategy.control = {"w": f32(0.25)}
    (msg,) = configure(strategy, 2, {"w": f32(1)}, [1])
    np.testing.assert_array_equal(msg.content[CONTROL_KEY]["w"].numpy(), f32(0.25))


def test_golden_two_rounds():
    """4 regions connected, 2 sampled each round (fraction 0.5): N = 4.

    Round 1: x = (n-weighted) avg(y) = (1*0 + 3*4) / 4 = 3; c = (0.5 + 1.5) / 4 = 0.5
    Round 2: c = 0.5 + (1.0 + -3.0) / 4 = 0; with lr_g = 0.5: x = 3 + 0.5 * (5 - 3) = 4
    """
    strategy = Scaffold(fraction_train=0.5, min_train_clients=2, min_available_clients=4)
    _, x1 = scaffold_round(
        strategy,
        1,
        {"w": f32(1.0)},
        [{"w": f32(0.0)}, {"w": f32(4.0)}],
        [{"w": f32(0.5)}, {"w": f32(1.5)}],
        [1, 3],
        [1, 2, 3, 4],
    )
    np.testing.assert_array_equal(x1["w"], f32(3.0))
    np.testing.assert_allclose(strategy.control["w"], f32(0.5))
    strategy.server_learning_rate = 0.5
    msgs, x2 = scaffold_round(
        strategy,
        2,
        x1,
        [{"w": f32(5.0)}, {"w": f32(5.0)}],
        [{"w": f32(1.0)}, {"w": f32(-3.0)}],
        [1, 1],
        [1, 2, 3, 4],
    )
    np.testing.assert_allclose(msgs[0].content[CONTROL_KEY]["w"].numpy(), f32(0.5))
    np.testing.assert_allclose(x2["w"], f32(4.0))
    np.testing.assert_allclose(strategy.control["w"], f32(0.0))


def test_round_one_is_fedavg_bit_for_bit():
    rng = np.random.default_rng(0)
    current = {"k": rng.normal(size=(3, 2)).astype(np.float32), "n": np.array([2], np.int64)}
    updates = [
        {"k": rng.normal(size=(3, 2)).astype(np.float32), "n": np.array([2], np.int64)}
        for _ in range(3)
    ]
    deltas = [{"k": rng.normal(size=(3, 2)).astype(np.float32)} for _ in range(3)]
    weights = [5, 2, 9]
    _, ours = scaffold_round(
        Scaffold(min_available_clients=3), 1, current, updates, deltas, weights, [1, 2, 3]
    )
    fedavg = FedAvg(min_available_clients=3)
    msgs = configure(fedavg, 1, current, [1, 2, 3])
    replies = [
        reply(m, f"r{i}", u, w)
        for i, (m, u, w) in enumerate(zip(msgs, updates, weights, strict=True))
    ]
    theirs = numpy(fedavg.aggregate_train(1, replies)[0])
    for name in current:
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_bad_deltas_are_rejected():
    strategy = Scaffold(min_available_clients=3)
    _, new = scaffold_round(
        strategy,
        1,
        {"w": f32(1.0, 1.0)},
        [{"w": f32(2.0, 2.0)}, {"w": f32(0.0, 0.0)}, {"w": f32(9.0, 9.0)}],
        [{"w": f32(1.0, 1.0)}, None, {"w": f32(np.nan, 1.0)}],
        [1, 1, 1],
        [1, 2, 3],
    )
    np.testing.assert_array_equal(new["w"], f32(2.0, 2.0))  # only r0 was accepted
    reasons = [r["reason"] for r in strategy.rejected]
    assert DELTA_KEY in reasons[0] and "not finite" in reasons[1]
    np.testing.assert_allclose(strategy.control["w"], f32(1 / 3, 1 / 3))
    _, none = scaffold_round(  # c now names "w": a delta naming another variable is refused
        strategy, 2, new, [{"w": f32(1.0, 1.0)}], [{"v": f32(1.0)}], [1], [1, 2, 3]
    )
    assert none is None
    assert "not the control variate" in strategy.rejected[-1]["reason"]
    with pytest.raises(InvalidParameterError, match="server_learning_rate"):
        Scaffold(server_learning_rate=0)


def test_state_dict_carries_c_and_resumes_the_trajectory():
    def two(strategy, rounds):
        x = {"w": f32(1.0, 2.0)}
        out = []
        for r in rounds:
            _, x = scaffold_round(
                strategy,
                r,
                x,
                [{"w": x["w"] - r}, {"w": x["w"] + 2 * r}],
                [{"w": f32(r, -r)}, {"w": f32(0.5, 0.5)}],
                [1, 2],
                [1, 2],
            )
            out.append(x)
        return out

    reference = two(Scaffold(), [1, 2])
    first = Scaffold()
    two(first, [1])
    state = first.state_dict()
    np.testing.assert_allclose(state["control"]["w"], f32(1.5 / 2, -0.5 / 2))
    resumed = Scaffold()
    resumed.load_state_dict(state)
    state["control"]["w"][:] = 99  # a copy
    x = {"w": reference[0]["w"]}
    _, again = scaffold_round(
        resumed,
        2,
        x,
        [{"w": x["w"] - 2}, {"w": x["w"] + 4}],
        [{"w": f32(2, -2)}, {"w": f32(0.5, 0.5)}],
        [1, 2],
        [1, 2],
    )
    np.testing.assert_array_equal(again["w"], reference[1]["w"])
    assert isinstance(resumed.control["w"], np.ndarray)
    assert not isinstance(state["control"], ArrayRecord)
