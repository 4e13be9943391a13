"""Golden, hand-computed tests of strategies.robust, cross-checked with Flower's helpers."""

import numpy as np
import pytest
from flwr.serverapp.strategy.bulyan import aggregate_n_closest_weights
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

from strategies.errors import (
    InvalidParameterError,
    NonFiniteError,
    PreconditionError,
    ShapeMismatchError,
    StrategyError,
)
from strategies.robust import (
    bulyan,
    check_clients,
    coordinate_median,
    krum_scores,
    min_clients,
    multikrum,
    pairwise_sq_distances,
    trimmed_mean,
)


def f32(*values):
    return np.array(values, dtype=np.float32)


def scalars(*values, weights=None):
    """One client per value, each with a single layer ``w`` of shape (1,)."""
    weights = weights or [1] * len(values)
    return [
        (f"c{i}", {"w": f32(v)}, w) for i, (v, w) in enumerate(zip(values, weights, strict=True))
    ]


# ---- median and trimmed mean (Yin et al. 2018) ----------------------------------------------


def test_coordinate_median_golden():
    updates = [
        ("a", {"w": f32(1, 10), "b": f32(0)}, 1),
        ("b", {"w": f32(2, 20), "b": f32(4)}, 100),  # weights do not matter
        ("c", {"w": f32(9, -5), "b": f32(1)}, 1),
    ]
    out = coordinate_median(updates)
    np.testing.assert_array_equal(out["w"], f32(2, 10))
    np.testing.assert_array_equal(out["b"], f32(1))
    assert out["w"].dtype == np.float32 and list(out) == ["w", "b"]
    even = coordinate_median(scalars(1, 2, 3, 100))
    np.testing.assert_array_equal(even["w"], f32(2.5))


def test_trimmed_mean_golden():
    updates = [
        (f"c{i}", {"w": f32(a, b)}, 1)
        for i, (a, b) in enumerate([(1, -50), (100, 0), (3, 1), (4, 2), (2, 3)])
    ]
    out = trimmed_mean(updates, beta=0.2)  # k = floor(0.2 * 5) = 1 cut at each end
    np.testing.assert_array_equal(out["w"], f32(3, 1))
    np.testing.assert_array_equal(trimmed_mean(updates, beta=0.0)["w"], f32(22, -8.8))
    # k = floor(0.1 * 5) = 0: nothing trimmed
    np.testing.assert_allclose(trimmed_mean(updates, beta=0.1)["w"], f32(22, -8.8))


def test_median_and_trimmed_mean_match_flower():
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(9, 4, 3)).astype(np.float32)
    updates = [(f"c{i}", {"w": stack[i]}, i + 1) for i in range(9)]
    np.testing.assert_allclose(
        trimmed_mean(updates, beta=0.25)["w"], trim_mean(stack, 0.25), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_array_equal(coordinate_median(updates)["w"], np.median(stack, axis=0))


def test_integer_layers_are_rounded_back():
    updates = [(f"c{i}", {"step": np.array([v], np.int64)}, 1) for i, v in enumerate([1, 2, 4, 5])]
    out = coordinate_median(updates)
    assert out["step"].dtype == np.int64 and out["step"][0] == 3  # median 3.0


@pytest.mark.parametrize("beta", [-0.1, 0.5, 0.7])
def test_trimmed_mean_beta_range(beta):
    with pytest.raises(InvalidParameterError, match=r"beta.*\[0, 0.5\)"):
        trimmed_mean(scalars(1, 2, 3), beta=beta)


def test_robust_rules_check_updates():
    bad = [*scalars(1, 2), ("africa", {"w": f32(1, 2)}, 1)]
    with pytest.raises(ShapeMismatchError, match="africa"):
        coordinate_median(bad)
    nan = [*scalars(1, 2), ("asia", {"w": f32(np.nan)}, 1)]
    with pytest.raises(NonFiniteError, match="asia"):
        trimmed_mean(nan, beta=0.1)
    with pytest.raises(StrategyError, match="no updates"):
        coordinate_median([])


# ---- Krum / Multi-Krum (Blanchard et al. 2017) ---------------------------------------------


def test_pairwise_distances_sum_over_layers():
    updates = [("a", {"x": f32(0, 0), "y": f32(1)}, 1), ("b", {"x": f32(3, 4), "y": f32(3)}, 1)]
    dist = pairwise_sq_distances(updates, {"x": ((2,), np.float32), "y": ((1,), np.float32)})
    np.testing.assert_array_equal(dist, [[0, 29], [29, 0]])


def test_krum_scores_golden():
    # values 0, 1, 2, 3, 100; f = 1 -> each client sums its n - f - 2 = 2 nearest
    updates = scalars(0, 1, 2, 3, 100)
    dist = pairwise_sq_distances(updates, {"w": ((1,), np.float32)})
    np.testing.assert_array_equal(krum_scores(dist, 1), [5, 2, 2, 5, 9409 + 9604])


def test_krum_picks_the_most_central_update():
    out, selected = multikrum(scalars(0, 1, 2, 3, 100), f=1, m=1)
    assert selected == ["c1"]  # scores 5, 2, 2, 5, ...: the first lowest
    np.testing.assert_array_equal(out["w"], f32(1))


def test_multikrum_golden_weighted_by_examples():
    updates = scalars(0, 1, 2, 3, 100, weights=[5, 1, 3, 5, 5])
    out, selected = multikrum(updates, f=1, m=2)
    assert selected == ["c1", "c2"]
    np.testing.assert_array_equal(out["w"], f32((1 * 1 + 2 * 3) / 4))
    out, selected = multikrum(updates, f=1)  # default m = n - f = 4
    assert selected == ["c0", "c1", "c2", "c3"]
    np.testing.assert_allclose(out["w"], f32((0 * 5 + 1 + 2 * 3 + 3 * 5) / 14))


def test_multikrum_selection_matches_flower():
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.multikrum import select_multikrum

    rng = np.random.default_rng(4)
    arrays = [{"w": rng.normal(size=(3, 2)).astype(np.float32)} for _ in range(8)]
    arrays[5]["w"] += 50
    updates = [(f"c{i}", a, 1) for i, a in enumerate(arrays)]
    contents = [
        RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(a["w"])}),
                "metrics": MetricRecord({"num-examples": 1, "i": i}),
            }
        )
        for i, a in enumerate(arrays)
    ]
    flower = select_multikrum(contents, num_malicious_nodes=2, num_nodes_to_select=4)
    _, ours = multikrum(updates, f=2, m=4)
    assert sorted(f"c{c['metrics']['i']}" for c in flower) == ours


def test_multikrum_num_selected_range():
    with pytest.raises(InvalidParameterError, match=r"num_selected.*\[1, n = 5\]"):
        multikrum(scalars(0, 1, 2, 3, 4), f=1, m=6)


# ---- Bulyan (El Mhamdi et al. 2018) ------------------------------------------------------


def test_bulyan_golden():
    """n = 7, f = 1: theta = 5 picked by recursive Krum, then beta = 3 closest to the median.

    Values 0, 1, 2, 3, 4, 5, 100. Krum over the remaining clients (n' - f - 2 nearest):
    n'=7, 4 nearest: scores 30, 15, 10, 10, 15, 30, big -> pick 2 (first lowest);
    n'=6, 3 nearest: 0:26, 1:14, 3:9, 4:11, 5:21 -> pick 3;
    n'=5, 2 nearest: 0:17, 1:10, 4:10, 5:17 -> pick 1;
    n'=4, 1 nearest: 0:16, 4:1, 5:1 -> pick 4;  n'=3, 0 nearest: all 0 -> pick 0.
    Selection 0..4, median 2, the 3 closest values 1, 2, 3 -> mean 2.
    """
    out, selected = bulyan(scalars(0, 1, 2, 3, 4, 5, 100), f=1)
    assert selected == ["c0", "c1", "c2", "c3", "c4"]
    np.testing.assert_array_equal(out["w"], f32(2))


def test_bulyan_coordinatewise_step_matches_flower():
    rng = np.random.default_rng(2)
    arrays = [{"w": rng.normal(size=(4, 3)).astype(np.float32)} for _ in range(11)]
    arrays[3]["w"] *= 1000
    updates = [(f"c{i}", a, 1) for i, a in enumerate(arrays)]
    out, selected = bulyan(updates, f=2)
    assert "c3" not in selected and len(selected) == 11 - 4
    chosen = [arrays[int(label[1:])]["w"] for label in selected]
    median = np.median(np.stack(chosen), axis=0)
    (reference,) = aggregate_n_closest_weights([median], [[c] for c in chosen], 11 - 4 - 4)
    np.testing.assert_allclose(out["w"], reference, rtol=1e-6)


def test_bulyan_with_f_zero_is_the_mean():
    out, _ = bulyan(scalars(1, 2, 6), f=0)
    np.testing.assert_array_equal(out["w"], f32(3))


# ---- preconditions -----------------------------------------------------------------------


def test_min_clients():
    assert [min_clients(r, 2) for r in ("krum", "multikrum", "bulyan")] == [7, 7, 11]
    assert min_clients("fedmedian", 3) == 1 and min_clients("fedtrimmedavg", 0) == 1
    with pytest.raises(InvalidParameterError, match="unknown robust rule"):
        min_clients("fedavg", 0)


@pytest.mark.parametrize(
    ("rule", "n", "f", "message"),
    [
        ("krum", 4, 1, r"krum: needs n >= 2f \+ 3.*at least 5.*f = 1.*n = 4"),
        ("bulyan", 6, 1, r"bulyan: needs n >= 4f \+ 3.*at least 7.*f = 1.*n = 6"),
        ("multikrum", 6, 2, r"multikrum.*at least 7.*n = 6"),
    ],
)
def test_precondition_errors(rule, n, f, message):
    with pytest.raises(PreconditionError, match=message) as info:
        check_clients(rule, n, f, where="(test)")
    assert (info.value.rule, info.value.n, info.value.f) == (rule, n, f)
    assert isinstance(info.value, StrategyError)


def test_rules_check_their_precondition_on_the_replies():
    with pytest.raises(PreconditionError, match=r"bulyan.*n = 6.*accepted replies"):
        bulyan(scalars(0, 1, 2, 3, 4, 5), f=1)
    with pytest.raises(PreconditionError, match=r"krum.*n = 4"):
        multikrum(scalars(0, 1, 2, 3), f=1, m=1)
