"""Streaming aggregation (strategies/aggregate.py): windowed, chunked, exact, O(model) memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import strategies.aggregate as agg
from strategies.aggregate import aggregate_layerwise, uniform_average, weighted_average
from strategies.compression import array_view
from strategies.errors import NonFiniteError, ShapeMismatchError


def _updates(n: int, seed: int = 0, weights: list | None = None):
    rng = np.random.default_rng(seed)
    shapes = {"a/kernel": (37, 29), "a/bias": (29,), "b/kernel": (301,), "step": ()}
    out = []
    for i in range(n):
        arrays = {name: rng.normal(size=shape).astype(np.float32) for name, shape in shapes.items()}
        out.append((f"c{i}", arrays, (weights or [])[i] if weights else float(10 + 7 * i)))
    return out


def _fma32(acc, value, factor):
    """float32 ``acc + factor * value`` rounded once, as BLAS saxpy's fused multiply-add:
    the float32 product is exact in float64, so only the sum is rounded (then to float32)."""
    exact = acc.astype(np.float64) + value.astype(np.float64) * np.float64(np.float32(factor))
    return exact.astype(np.float32)


def _one_at_a_time(updates):
    """The reference: sum_k (w_k / w_1) x_k in float32, one update after another,
    each added with one rounding (saxpy)."""
    acc, total, first = {}, 0.0, None
    for _, arrays, w in updates:
        first = w if first is None else first
        factor = w / first
        for name, value in arrays.items():
            acc[name] = _fma32(acc.get(name, np.zeros_like(value)), value, factor)
        total += factor
    return {name: value / np.float32(total) for name, value in acc.items()}


@pytest.fixture(params=[(4, 1 << 18), (3, 64), (1, 7)], ids=["default", "small-chunks", "w1"])
def blocking(request, monkeypatch):
    window, chunk = request.param
    monkeypatch.setattr(agg, "WINDOW", window)
    monkeypatch.setattr(agg, "CHUNK", chunk)


def test_weighted_average_is_bitwise_the_one_at_a_time_sum(blocking):
    updates = _updates(11)
    out = weighted_average(iter(updates))
    expected = _one_at_a_time(updates)
    for name in expected:
        np.testing.assert_array_equal(out[name], expected[name])


def test_uniform_and_layerwise_agree_across_blocking(monkeypatch):
    updates = _updates(9, seed=2)
    current = {n: np.zeros_like(v) for n, v in updates[0][1].items()}
    plan = {"a/kernel": "weighted", "a/bias": "uniform", "b/kernel": "keep", "step": "weighted"}
    reference = (uniform_average(updates), aggregate_layerwise(updates, current=current, plan=plan))
    monkeypatch.setattr(agg, "WINDOW", 3)
    monkeypatch.setattr(agg, "CHUNK", 50)
    again = (uniform_average(updates), aggregate_layerwise(updates, current=current, plan=plan))
    for a, b in zip(reference, again, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


def test_non_finite_value_is_blamed_on_its_client_and_layer(blocking):
    updates = _updates(7)
    updates[5][1]["b/kernel"][123] = np.nan
    with pytest.raises(NonFiniteError) as err:
        weighted_average(updates)
    assert err.value.client == "c5" and err.value.layer == "b/kernel"


def test_non_finite_value_of_a_zero_weight_client_is_still_an_error(blocking):
    updates = _updates(5)
    updates[2] = ("c2", updates[2][1], 0.0)
    updates[2][1]["a/bias"][0] = np.inf
    with pytest.raises(NonFiniteError) as err:
        weighted_average(updates)
    assert err.value.client == "c2"


def test_errors_come_in_the_order_of_the_updates(blocking):
    """A NaN in update 1 is reported before a wrong shape in update 2 (same window)."""
    updates = _updates(4)
    updates[1][1]["a/kernel"][0, 0] = np.nan
    updates[2][1]["a/bias"] = np.zeros(3, np.float32)
    with pytest.raises(NonFiniteError) as err:
        weighted_average(updates)
    assert err.value.client == "c1"
    updates[1][1]["a/kernel"][0, 0] = 0.0
    with pytest.raises(ShapeMismatchError):
        weighted_average(updates)


def test_peak_memory_is_o_model_not_o_clients():
    """40 updates made one at a time (like decoded replies): peak is a few models."""
    rng = np.random.default_rng(0)
    template = {"w": rng.normal(size=(500, 500)).astype(np.float32)}
    model = template["w"].nbytes

    def stream(n):
        for i in range(n):
            yield f"c{i}", {"w": template["w"] + np.float32(i)}, 1.0 + i

    tracemalloc.start()
    weighted_average(stream(40))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < (agg.WINDOW + 3) * model  # accumulator, window, one being made
    assert peak < 40 * model / 4


def test_array_view_reads_flower_arrays_without_copying():
    from flwr.app import Array

    value = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    view = array_view(Array(value))
    np.testing.assert_array_equal(view, value)
    assert not view.flags.owndata and not view.flags.writeable


def test_read_only_and_non_contiguous_inputs_give_the_same_average():
    """BLAS axpy reads Flower's read-only views and strided arrays as numpy would."""
    updates = _updates(6, seed=3)
    frozen = []
    for client, arrays, w in updates:
        views = {}
        for name, value in arrays.items():
            view = value.copy()
            view.flags.writeable = False
            views[name] = view
        frozen.append((client, views, w))
    strided = [
        (c, {n: np.asfortranarray(v) if v.ndim == 2 else v for n, v in a.items()}, w)
        for c, a, w in updates
    ]
    expected = weighted_average(updates)
    for variant in (frozen, strided):
        out = weighted_average(variant)
        for name in expected:
            np.testing.assert_array_equal(out[name], expected[name])


def test_float64_and_float16_layers_are_averaged_in_their_accumulators():
    """float64 goes through daxpy, float16 through numpy into a float32 accumulator."""
    for dtype, acc_tol in ((np.float64, 1e-12), (np.float16, 1e-3)):
        updates = [(f"c{i}", {"w": np.full(5, i + 1, dtype)}, float(i + 1)) for i in range(4)]
        out = weighted_average(updates)["w"]
        assert out.dtype == dtype
        np.testing.assert_allclose(out.astype(np.float64), 3.0, rtol=acc_tol)
