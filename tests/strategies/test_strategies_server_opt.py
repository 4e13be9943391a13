"""Golden, hand-computed tests of strategies.server_opt (FedAvgM, FedAdagrad/Adam/Yogi)."""

import numpy as np
import pytest

from strategies.errors import InvalidParameterError, StrategyError
from strategies.server_opt import adaptive_step, momentum_step, pseudo_gradient


def f32(*values):
    return np.array(values, dtype=np.float32)


CURRENT = {"w": f32(1.0, 2.0), "step": np.array([7], np.int64)}
AVERAGED = {"w": f32(1.5, 1.0), "step": np.array([9], np.int64)}  # delta = (0.5, -1.0)


def test_pseudo_gradient_covers_float_layers_only():
    delta = pseudo_gradient(CURRENT, AVERAGED)
    assert list(delta) == ["w"]
    np.testing.assert_array_equal(delta["w"], f32(0.5, -1.0))
    with pytest.raises(StrategyError, match="names"):
        pseudo_gradient(CURRENT, {"w": f32(1, 1)})
    with pytest.raises(StrategyError, match="shape"):
        pseudo_gradient({"w": f32(1)}, {"w": f32(1, 2)})


def test_momentum_lr1_no_momentum_is_fedavg_exactly():
    current = {"w": np.float32([0.1, 1 / 3])}
    averaged = {"w": np.float32([0.7, 1e-8])}
    new, velocity = momentum_step(current, averaged, None, lr=1.0, momentum=0.0)
    np.testing.assert_array_equal(new["w"], averaged["w"])
    assert velocity is None and new["w"] is not averaged["w"]


def test_momentum_two_rounds_golden():
    x0, a1 = {"w": f32(1.0)}, {"w": f32(0.5)}
    x1, v = momentum_step(x0, a1, None, lr=1.0, momentum=0.9)  # v = -0.5
    np.testing.assert_allclose(x1["w"], f32(0.5))
    x2, v = momentum_step(x1, {"w": f32(0.25)}, v, lr=0.5, momentum=0.9)
    # v = 0.9 * -0.5 + (0.25 - 0.5) = -0.7; x = 0.5 + 0.5 * -0.7 = 0.15
    np.testing.assert_allclose(v["w"], f32(-0.7), rtol=1e-6)
    np.testing.assert_allclose(x2["w"], f32(0.15), rtol=1e-6)
    assert x0["w"][0] == 1.0 and a1["w"][0] == 0.5  # inputs untouched


PARAMS = {"eta": 0.1, "beta_1": 0.0, "beta_2": 0.99, "tau": 0.5, "initial_accumulator": 0.25}


def test_adagrad_golden():
    new, m, v = adaptive_step("adagrad", CURRENT, AVERAGED, None, None, **PARAMS)
    # v = 0.25 + (0.25, 1.0) = (0.5, 1.25); step = 0.1 * delta / (sqrt(v) + 0.5)
    np.testing.assert_allclose(v["w"], f32(0.5, 1.25))
    step = 0.1 * np.array([0.5, -1.0]) / (np.sqrt([0.5, 1.25]) + 0.5)
    np.testing.assert_allclose(new["w"], np.array([1.0, 2.0]) + step, rtol=1e-6)
    np.testing.assert_array_equal(m["w"], f32(0.5, -1.0))
    np.testing.assert_array_equal(new["step"], [9])  # integer layers take the average
    assert new["w"].dtype == np.float32 and list(m) == ["w"]


def test_adam_golden():
    params = {**PARAMS, "beta_1": 0.9}
    new, m, v = adaptive_step("adam", CURRENT, AVERAGED, None, None, **params)
    # m = 0.1 * delta = (0.05, -0.1); v = 0.99 * 0.25 + 0.01 * delta^2 = (0.25, 0.2575)
    np.testing.assert_allclose(m["w"], f32(0.05, -0.1), rtol=1e-6)
    np.testing.assert_allclose(v["w"], f32(0.25, 0.2575), rtol=1e-6)
    np.testing.assert_allclose(new["w"], f32(1.005, 2.0 - 0.01 / (np.sqrt(0.2575) + 0.5)))


def test_yogi_golden():
    params = {**PARAMS, "beta_1": 0.9}
    new, _, v = adaptive_step("yogi", CURRENT, AVERAGED, None, None, **params)
    # sign(v - delta^2) = (0, -1): v = 0.25 - 0.01 * delta^2 * sign = (0.25, 0.26)
    np.testing.assert_allclose(v["w"], f32(0.25, 0.26), rtol=1e-6)
    np.testing.assert_allclose(new["w"], f32(1.005, 2.0 - 0.01 / (np.sqrt(0.26) + 0.5)))


def test_state_carries_over_rounds():
    params = {**PARAMS, "beta_1": 0.9}
    _, m, v = adaptive_step("adam", CURRENT, AVERAGED, None, None, **params)
    _, m2, v2 = adaptive_step("adam", CURRENT, AVERAGED, m, v, **params)
    np.testing.assert_allclose(m2["w"], 0.9 * m["w"] + 0.1 * f32(0.5, -1.0), rtol=1e-6)
    np.testing.assert_allclose(v2["w"], 0.99 * v["w"] + 0.01 * f32(0.25, 1.0), rtol=1e-6)
    with pytest.raises(StrategyError, match="shape"):
        adaptive_step("adam", CURRENT, AVERAGED, {"w": f32(1)}, v, **params)


@pytest.mark.parametrize("kind", ["adagrad", "adam", "yogi"])
def test_adaptive_limit_is_fedavg(kind):
    """beta_1 = 0, v0 = 0, eta = tau -> infinity: x + eta * delta / (|delta| + tau) -> average."""
    rng = np.random.default_rng(0)
    current = {"w": rng.normal(size=(5, 3)).astype(np.float32)}
    averaged = {"w": rng.normal(size=(5, 3)).astype(np.float32)}
    big = 1e9
    params = {"eta": big, "beta_1": 0.0, "beta_2": 0.0, "tau": big, "initial_accumulator": 0.0}
    new, _, _ = adaptive_step(kind, current, averaged, None, None, **params)
    np.testing.assert_allclose(new["w"], averaged["w"], rtol=1e-6, atol=1e-6)


def test_unknown_kind():
    with pytest.raises(InvalidParameterError, match="adagrad"):
        adaptive_step("sgd", CURRENT, AVERAGED, None, None, **PARAMS)
