"""q-FFL (Li et al. 2020) and FedNova (Wang et al. 2020) driven with real flwr Messages:
golden hand-computed steps, their FedAvg special cases, and replies that lack a metric."""

from __future__ import annotations

import numpy as np
import pytest

from strategies import QFFL, FedAvg, FedNova
from strategies.client_metrics import LEARNING_RATE, LOCAL_STEPS, REPORT_KEY, START_LOSS
from strategies.errors import InvalidParameterError
from strategies.fednova import normalizer
from tests.strategies.test_strategies_catalogue import configure, run_round

pytestmark = pytest.mark.usefixtures("task_identity")


def f32(*values):
    return np.array(values, dtype=np.float32)


def small(cls, **kwargs):
    return cls(min_train_clients=1, min_available_clients=1, **kwargs)


# ---- q-FFL ---------------------------------------------------------------------------------


def test_qffl_asks_for_the_start_loss_and_the_learning_rate():
    (msg,) = configure(small(QFFL, q=1.0), 1, {"w": f32(1)}, [1])
    assert list(msg.content["config"][REPORT_KEY]) == [START_LOSS, LEARNING_RATE]
    (msg,) = configure(small(QFFL, q=1.0, client_learning_rate=0.1), 1, {"w": f32(1)}, [1])
    assert list(msg.content["config"][REPORT_KEY]) == [START_LOSS]
    (msg,) = configure(small(FedAvg), 1, {"w": f32(1)}, [1])
    assert REPORT_KEY not in msg.content["config"]


def test_qffl_golden_step():
    """Algorithm 2 by hand: q = 1, lr = 0.5 (L = 2), w = (1, 2).

    A: w_A = (0, 2), n = 1, F = 1: Delta = 1 * 2 * (1, 0) = (2, 0);   h = 1*4*1 + 2*1 = 6
    B: w_B = (1, 4), n = 3, F = 4: Delta = 4 * 2 * (0, -2) = (0, -16); h = 1*4*4 + 2*4 = 24
    p = (1/4, 3/4): sum p Delta = (0.5, -12), sum p h = 19.5
    w_new = (1, 2) - (0.5, -12) / 19.5
    """
    strategy = small(QFFL, q=1.0)
    new = run_round(
        strategy,
        1,
        {"w": f32(1.0, 2.0), "count": np.array([4], np.int64)},
        [
            {"w": f32(0.0, 2.0), "count": np.array([4], np.int64)},
            {"w": f32(1.0, 4.0), "count": np.array([4], np.int64)},
        ],
        weights=[1, 3],
        metrics=[
            {START_LOSS: 1.0, LEARNING_RATE: 0.5},
            {START_LOSS: 4.0, LEARNING_RATE: 0.5},
        ],
    )
    expected = np.array([1.0, 2.0]) - np.array([0.5, -12.0]) / 19.5
    np.testing.assert_allclose(new["w"], expected, rtol=1e-6)
    assert new["w"].dtype == np.float32
    np.testing.assert_array_equal(new["count"], [4])  # integer arrays: the average
    # the same with the learning rate given to the strategy instead of reported
    given = run_round(
        small(QFFL, q=1.0, client_learning_rate=0.5),
        1,
        {"w": f32(1.0, 2.0)},
        [{"w": f32(0.0, 2.0)}, {"w": f32(1.0, 4.0)}],
        weights=[1, 3],
        metrics=[{START_LOSS: 1.0}, {START_LOSS: 4.0}],
    )
    np.testing.assert_array_equal(given["w"], new["w"])


def test_qffl_with_q_zero_is_fedavg():
    rng = np.random.default_rng(0)
    current = {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": f32(0.5, -0.5)}
    updates = [
        {
            k: (v + rng.normal(scale=0.3, size=v.shape)).astype(np.float32)
            for k, v in current.items()
        }
        for _ in range(4)
    ]
    weights = [3, 10, 1, 7]
    losses = [{START_LOSS: float(x), LEARNING_RATE: 0.01} for x in (0.1, 2.0, 9.0, 0.0)]
    ours = run_round(small(QFFL, q=0.0), 1, current, updates, weights, losses)
    fedavg = run_round(small(FedAvg), 1, current, updates, weights)
    for name in current:
        np.testing.assert_allclose(ours[name], fedavg[name], rtol=1e-6, atol=1e-6)
    # q > 0 steps in the direction of the region with the highest loss (index 2)
    fair = run_round(small(QFFL, q=5.0), 1, current, updates, weights, losses)

    def cosine(new):
        a, b = (new - current["w"]).ravel(), (updates[2]["w"] - current["w"]).ravel()
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    assert cosine(fair["w"]) > 0.99 > cosine(fedavg["w"])


def test_qffl_rejects_a_reply_without_the_start_loss():
    strategy = small(QFFL, q=1.0, client_learning_rate=0.1)
    new = run_round(
        strategy,
        1,
        {"w": f32(1.0)},
        [{"w": f32(0.0)}, {"w": f32(3.0)}],
        metrics=[{START_LOSS: 1.0}, {}],
    )
    # only A is left: w - (F L (w - w_A)) / (q L^2 d^2 + L F) with L = 10, F = 1, d = 1
    np.testing.assert_allclose(new["w"], [1.0 - 10.0 / 110.0], rtol=1e-6)
    (rejected,) = strategy.rejected
    assert rejected["region"] == "r1" and START_LOSS in rejected["reason"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"q": -1}, "q must be"),
        ({"q": float("nan")}, "q must be"),
        ({"client_learning_rate": 0}, "must be > 0"),
        ({"client_learning_rate": "fast"}, "client_learning_rate must be"),
    ],
)
def test_qffl_parameter_validation(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        QFFL(**kwargs)


# ---- FedNova ---------------------------------------------------------------------------------


def test_fednova_asks_for_local_steps():
    (msg,) = configure(small(FedNova), 1, {"w": f32(1)}, [1])
    assert list(msg.content["config"][REPORT_KEY]) == [LOCAL_STEPS]
    assert FedNova().drop_stragglers is False


def test_fednova_golden_unequal_steps():
    """w = 1; A: w_A = 0 after 1 step, B: w_B = 3 after 4 steps, n = 1 each.

    d_A = (1 - 0) / 1 = 1, d_B = (1 - 3) / 4 = -0.5; tau_eff = 2.5;
    w_new = 1 - 2.5 * (0.5 * 1 + 0.5 * -0.5) = 0.375   (FedAvg: 1.5)
    """
    updates = [{"w": f32(0.0)}, {"w": f32(3.0)}]
    steps = [{LOCAL_STEPS: 1}, {LOCAL_STEPS: 4}]
    new = run_round(small(FedNova), 1, {"w": f32(1.0)}, updates, metrics=steps)
    np.testing.assert_allclose(new["w"], [0.375], rtol=1e-6)
    fedavg = run_round(small(FedAvg), 1, {"w": f32(1.0)}, updates)
    np.testing.assert_allclose(fedavg["w"], [1.5])


def test_fednova_momentum_normaliser_golden():
    # two steps with momentum rho: w -= lr (g1 + (rho g1 + g2)): a = (1 + rho, 1)
    assert normalizer(2, 0.5) == pytest.approx(2.5)
    assert normalizer(7, 0.0) == 7
    assert normalizer(1, 0.9) == pytest.approx(1.0)
    # large tau: a -> tau / (1 - rho) - rho / (1 - rho)^2
    assert normalizer(1000, 0.5) == pytest.approx(1000 / 0.5 - 0.5 / 0.25)


def test_fednova_with_equal_steps_is_fedavg():
    rng = np.random.default_rng(1)
    current = {"w": rng.normal(size=(5,)).astype(np.float32)}
    updates = [{"w": rng.normal(size=(5,)).astype(np.float32)} for _ in range(3)]
    weights = [2, 5, 11]
    steps = [{LOCAL_STEPS: 6}] * 3
    ours = run_round(small(FedNova, momentum=0.9), 1, current, updates, weights, steps)
    fedavg = run_round(small(FedAvg), 1, current, updates, weights)
    np.testing.assert_allclose(ours["w"], fedavg["w"], rtol=1e-6, atol=1e-6)


def test_fednova_rejects_a_reply_without_steps_and_validates():
    strategy = small(FedNova)
    new = run_round(
        strategy,
        1,
        {"w": f32(1.0)},
        [{"w": f32(0.0)}, {"w": f32(3.0)}],
        metrics=[{}, {LOCAL_STEPS: 2}],
    )
    np.testing.assert_allclose(new["w"], [3.0], rtol=1e-6)  # one region: its own update
    assert LOCAL_STEPS in strategy.rejected[0]["reason"]
    with pytest.raises(InvalidParameterError, match="momentum"):
        FedNova(momentum=1.0)
