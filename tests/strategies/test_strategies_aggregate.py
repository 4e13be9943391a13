"""Golden, hand-computed tests of strategies.aggregate (pure numpy)."""

import numpy as np
import pytest

from strategies.aggregate import (
    aggregate_layerwise,
    check_update,
    check_weight,
    reference_of,
    uniform_average,
    weighted_average,
)
from strategies.errors import (
    AggregationError,
    DtypeMismatchError,
    InvalidWeightError,
    KeyMismatchError,
    NonFiniteError,
    ShapeMismatchError,
    StrategyError,
    ZeroTotalWeightError,
)


def f32(*values):
    return np.array(values, dtype=np.float32)


def two_clients():
    a = {"dense/kernel": f32(1, 2), "dense/bias": f32(0)}
    b = {"dense/kernel": f32(4, 8), "dense/bias": f32(4)}
    return [("eu", a, 1), ("asia", b, 3)]


def test_weighted_average_golden():
    out = weighted_average(iter(two_clients()))
    np.testing.assert_array_equal(out["dense/kernel"], f32(3.25, 6.5))
    np.testing.assert_array_equal(out["dense/bias"], f32(3.0))
    assert list(out) == ["dense/kernel", "dense/bias"]
    assert out["dense/kernel"].dtype == np.float32


def test_uniform_average_golden():
    out = uniform_average(two_clients())
    np.testing.assert_array_equal(out["dense/kernel"], f32(2.5, 5.0))
    np.testing.assert_array_equal(out["dense/bias"], f32(2.0))


def test_single_client_is_exact():
    rng = np.random.default_rng(1)
    arrays = {"w": rng.normal(size=(7, 3)).astype(np.float32), "b": rng.normal(size=3)}
    out = weighted_average([("solo", arrays, 17)])
    for name, value in arrays.items():
        np.testing.assert_array_equal(out[name], value)
        assert out[name].dtype == value.dtype


def test_output_dtype_follows_input():
    updates = [
        ("a", {"h": np.array([1, 2], np.float16), "d": np.array([1.0], np.float64)}, 1),
        ("b", {"h": np.array([3, 4], np.float16), "d": np.array([2.0], np.float64)}, 1),
    ]
    out = weighted_average(updates)
    assert out["h"].dtype == np.float16 and out["d"].dtype == np.float64
    np.testing.assert_array_equal(out["h"], np.array([2, 3], np.float16))


def test_integer_layer_is_rounded_back():
    updates = [("a", {"step": np.array([1], np.int64)}, 1), ("b", {"step": np.array([4])}, 2)]
    out = weighted_average(updates)
    assert out["step"].dtype == np.int64 and out["step"][0] == 3


def test_float32_streaming_error_vs_float64_reference():
    rng = np.random.default_rng(0)
    updates = [
        (f"c{i}", {"w": (rng.normal(size=(64, 32)) + 3).astype(np.float32)}, int(w))
        for i, w in enumerate(rng.integers(1, 1000, size=100))
    ]
    out = weighted_average(iter(updates))["w"]
    total = sum(w for _, _, w in updates)
    ref = sum(a["w"].astype(np.float64) * w for _, a, w in updates) / total
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_iterable_consumed_once():
    calls = []

    def gen():
        calls.append(1)
        yield from two_clients()

    weighted_average(gen())
    assert calls == [1]


def test_keys_and_reference_parameters():
    out = weighted_average(two_clients(), keys=["dense/bias", "dense/kernel"])
    assert list(out) == ["dense/bias", "dense/kernel"]
    ref = reference_of(two_clients()[0][1])
    out = weighted_average(two_clients(), reference=ref)
    np.testing.assert_array_equal(out["dense/bias"], f32(3.0))


# ---- layerwise --------------------------------------------------------------------------


def test_layerwise_mixed_plan_golden():
    current = {"w": f32(10, 10), "u": f32(10), "k": f32(-1, -1)}
    updates = [("eu", {"w": f32(1, 2), "u": f32(1), "k": f32(5, 5)}, 1)]
    updates.append(("asia", {"w": f32(4, 8), "u": f32(4), "k": f32(7, 7)}, 3))
    plan = {"w": "weighted", "u": "uniform", "k": "keep"}
    out = aggregate_layerwise(iter(updates), current=current, plan=plan)
    assert list(out) == ["w", "u", "k"]
    np.testing.assert_array_equal(out["w"], f32(3.25, 6.5))
    np.testing.assert_array_equal(out["u"], f32(2.5))
    np.testing.assert_array_equal(out["k"], f32(-1, -1))


def test_layerwise_keep_ignores_nonfinite_local_values():
    current = {"w": f32(0), "bn": f32(1)}
    updates = [("eu", {"w": f32(2), "bn": f32(np.nan)}, 2), ("us", {"w": f32(4), "bn": f32(3)}, 2)]
    out = aggregate_layerwise(updates, current=current, plan={"w": "weighted", "bn": "keep"})
    np.testing.assert_array_equal(out["w"], f32(3))
    np.testing.assert_array_equal(out["bn"], f32(1))


def test_layerwise_all_keep_returns_current():
    current = {"w": f32(1, 2)}
    out = aggregate_layerwise(two_clients_w(), current=current, plan={"w": "keep"})
    np.testing.assert_array_equal(out["w"], f32(1, 2))


def two_clients_w():
    return [("a", {"w": f32(5, 5)}, 1), ("b", {"w": f32(7, 7)}, 1)]


def test_layerwise_still_checks_shapes_of_kept_layers():
    current = {"w": f32(1, 2), "k": f32(0)}
    updates = [("eu", {"w": f32(1, 2), "k": f32(0, 0)}, 1)]
    with pytest.raises(ShapeMismatchError, match=r"'eu'.*'k'"):
        aggregate_layerwise(updates, current=current, plan={"w": "weighted", "k": "keep"})


def test_layerwise_bad_plan():
    with pytest.raises(StrategyError, match="unplanned"):
        aggregate_layerwise([], current={"w": f32(1)}, plan={})
    with pytest.raises(StrategyError, match="'median'"):
        aggregate_layerwise([], current={"w": f32(1)}, plan={"w": "median"})


# ---- typed errors -----------------------------------------------------------------------


def with_second(arrays, weight=1):
    good = {"dense/kernel": f32(1, 2), "dense/bias": f32(0)}
    return [("eu", good, 1), ("africa", arrays, weight)]


@pytest.mark.parametrize(
    ("arrays", "error", "layer"),
    [
        ({"dense/kernel": f32(1, 2)}, KeyMismatchError, "dense/bias"),
        (
            {"dense/kernel": f32(1, 2), "dense/bias": f32(0), "x/y": f32(1)},
            KeyMismatchError,
            "x/y",
        ),
        ({"dense/kernel": f32(1, 2, 3), "dense/bias": f32(0)}, ShapeMismatchError, "dense/kernel"),
        (
            {"dense/kernel": np.array([1, 2]), "dense/bias": f32(0)},
            DtypeMismatchError,
            "dense/kernel",
        ),
        ({"dense/kernel": f32(1, np.nan), "dense/bias": f32(0)}, NonFiniteError, "dense/kernel"),
        ({"dense/kernel": f32(1, 2), "dense/bias": f32(np.inf)}, NonFiniteError, "dense/bias"),
    ],
)
def test_typed_update_errors_name_client_and_layer(arrays, error, layer):
    with pytest.raises(error) as info:
        weighted_average(with_second(arrays))
    assert info.value.client == "africa"
    assert info.value.layer == layer
    assert "africa" in str(info.value) and layer in str(info.value)
    assert isinstance(info.value, AggregationError) and isinstance(info.value, ValueError)


def test_shape_error_states_expected_and_got():
    with pytest.raises(ShapeMismatchError, match=r"expected shape \(2,\), got \(3,\)"):
        weighted_average(with_second({"dense/kernel": f32(1, 2, 3), "dense/bias": f32(0)}))


@pytest.mark.parametrize("weight", [-1, float("nan"), float("inf"), "3", None, True])
def test_invalid_weight(weight):
    with pytest.raises(InvalidWeightError) as info:
        weighted_average(with_second({"dense/kernel": f32(1, 2), "dense/bias": f32(0)}, weight))
    assert info.value.client == "africa" and "africa" in str(info.value)


def test_check_weight_rejects_zero_unless_allowed():
    with pytest.raises(InvalidWeightError, match=r"'eu'.*> 0"):
        check_weight(0, client="eu")
    assert check_weight(0, client="eu", allow_zero=True) == 0.0
    assert check_weight(np.int64(5), client="eu") == 5.0


def test_zero_total_weight():
    updates = [("eu", {"w": f32(1)}, 0), ("us", {"w": f32(2)}, 0.0)]
    with pytest.raises(ZeroTotalWeightError, match=r"'w'.*total weight"):
        weighted_average(updates)
    with pytest.raises(ZeroTotalWeightError, match="no updates"):
        weighted_average([])


def test_zero_weight_client_contributes_nothing():
    updates = [("eu", {"w": f32(1)}, 0), ("us", {"w": f32(2)}, 5)]
    np.testing.assert_array_equal(weighted_average(updates)["w"], f32(2))


def test_check_update_directly():
    ref = reference_of({"a": f32(1, 2)})
    check_update({"a": f32(3, 4)}, ref, client="eu")
    with pytest.raises(KeyMismatchError, match="missing 1 variable"):
        check_update({}, ref, client="eu")
    check_update({"a": f32(np.nan, 1)}, ref, client="eu", finite=())


# ---- exactness and per-layer weights ---------------------------------------------------------


@pytest.mark.parametrize("weight", [3, 48, 0.1, 123456])
def test_one_update_is_returned_bit_for_bit(weight):
    """Weights enter relative to the first one: a single update has factor exactly 1."""
    value = np.float32([0.09259679, 1 / 3, 7e-8, -2.5e6])
    out = weighted_average([("solo", {"w": value}, weight)])
    np.testing.assert_array_equal(out["w"], value)
    zero_others = [("a", {"w": value}, weight), ("b", {"w": value * 9}, 0)]
    np.testing.assert_array_equal(weighted_average(zero_others)["w"], value)


def test_criterion_weight_golden():
    from strategies.aggregate import criterion_weight

    kw = {"client": "eu", "num_examples": 4}
    assert criterion_weight("num-examples", **kw) == 4
    assert criterion_weight("uniform", **kw) == 1
    assert criterion_weight("inverse-loss", loss=0.5, **kw) == 8
    assert criterion_weight("inverse-loss", loss=0.0, **kw) == 4 / 1e-8
    norm = criterion_weight("update-norm", update=f32(3, 4), current=f32(0, 0), **kw)
    assert norm == 20
    with pytest.raises(InvalidWeightError, match="inverse-loss"):
        criterion_weight("inverse-loss", loss=float("nan"), **kw)
    with pytest.raises(StrategyError, match="unknown weighting criterion"):
        criterion_weight("median", **kw)


def test_layerwise_per_layer_weights_golden():
    from strategies.aggregate import layer_weights

    current = {"a": f32(0), "b": f32(0), "k": f32(5)}
    plan = {"a": "weighted", "b": "weighted", "k": "keep"}
    criteria = {"a": "inverse-loss", "b": "num-examples"}
    first = {"a": f32(1), "b": f32(1), "k": f32(0)}
    second = {"a": f32(4), "b": f32(4), "k": f32(0)}
    updates = [
        ("eu", first, layer_weights(criteria, first, client="eu", num_examples=1, loss=0.5)),
        ("us", second, layer_weights(criteria, second, client="us", num_examples=3, loss=3.0)),
    ]
    assert updates[0][2] == {"a": 2.0, "b": 1.0}
    out = aggregate_layerwise(updates, current=current, plan=plan)
    np.testing.assert_allclose(out["a"], f32(2))  # (2 * 1 + 1 * 4) / 3
    np.testing.assert_allclose(out["b"], f32(3.25))  # (1 * 1 + 3 * 4) / 4
    np.testing.assert_array_equal(out["k"], f32(5))
    with pytest.raises(InvalidWeightError, match=r"'us'.*'b'.*no weight"):
        aggregate_layerwise(
            [("eu", first, {"a": 1.0, "b": 1.0}), ("us", second, {"a": 1.0})],
            current=current,
            plan=plan,
        )


def test_per_layer_zero_total_keeps_the_current_value():
    current = {"a": f32(7)}
    updates = [("eu", {"a": f32(7)}, {"a": 0.0}), ("us", {"a": f32(7)}, {"a": 0.0})]
    out = aggregate_layerwise(updates, current=current, plan={"a": "weighted"})
    np.testing.assert_array_equal(out["a"], f32(7))
    with pytest.raises(ZeroTotalWeightError):  # scalar weights: still an error
        aggregate_layerwise([("eu", {"a": f32(7)}, 0)], current=current, plan={"a": "weighted"})
