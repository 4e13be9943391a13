"""Update compression (strategies/compression.py): round trips, error feedback, end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedglobal.protocol import to_record
from strategies import compression
from strategies.errors import StrategyError


def _delta(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "dense/kernel": rng.normal(scale=0.05, size=(40, 30)).astype(np.float32),
        "dense/bias": rng.normal(scale=0.01, size=30).astype(np.float32),
        "steps": np.array(7, np.int64),  # integer state travels as it is
    }


def test_float16_round_trip_within_half_precision():
    delta = _delta()
    out = compression.decode(compression.encode(delta, "float16"), "float16", delta)
    for name, value in delta.items():
        assert out[name].dtype == value.dtype and out[name].shape == value.shape
        if value.dtype.kind == "f":
            np.testing.assert_allclose(out[name], value, rtol=2.0**-11, atol=1e-7)
        else:
            np.testing.assert_array_equal(out[name], value)


def test_int8_round_trip_within_half_a_step():
    delta = _delta()
    wire = compression.encode(delta, "int8")
    assert wire["dense/kernel"].dtype == np.int8
    out = compression.decode(wire, "int8", delta)
    for name in ("dense/kernel", "dense/bias"):
        step = np.abs(delta[name]).max() / 127
        assert np.abs(out[name] - delta[name]).max() <= step / 2 * (1 + 1e-5)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 1.0])
def test_topk_keeps_exactly_the_largest_entries(fraction):
    delta = _delta()
    out = compression.decode(compression.encode(delta, "topk", fraction=fraction), "topk", delta)
    for name in ("dense/kernel", "dense/bias"):
        value, got = delta[name].ravel(), out[name].ravel()
        k = max(1, math.ceil(fraction * value.size))
        kept = np.flatnonzero(got)
        assert len(kept) == k
        np.testing.assert_array_equal(got[kept], value[kept])  # exact where sent
        assert np.abs(value[kept]).min() >= np.abs(np.delete(value, kept)).max(initial=0)


@pytest.mark.parametrize("codec", ["int8", "topk"])
def test_error_feedback_loses_nothing_for_good(codec):
    """The same update sent T times: what arrived = T * delta - residual, and the
    residual stays bounded (it does not grow with T)."""
    delta = _delta(1)
    zero = {n: np.zeros_like(v) for n, v in delta.items()}
    residual = None
    arrived = {n: np.zeros(v.shape, np.float64) for n, v in delta.items() if v.dtype.kind == "f"}
    rounds = 60
    sizes = []
    for _ in range(rounds):
        wire, residual = compression.compress(delta, zero, codec, fraction=0.05, residual=residual)
        sent = compression.decode(wire, codec, delta)
        for name in arrived:
            arrived[name] += sent[name]
        sizes.append(max(np.abs(r).max() for r in residual.values()))
    for name, total in arrived.items():
        np.testing.assert_allclose(
            total, rounds * delta[name].astype(np.float64) - residual[name], atol=1e-3
        )
        # on average every entry arrives: within 1/rounds of its full value
        assert np.abs(total / rounds - delta[name]).max() < 2 * sizes[-1] / rounds + 1e-4
    assert sizes[-1] <= 2 * max(sizes[: rounds // 2])  # bounded, not growing


def test_unknown_codec_is_an_error():
    with pytest.raises(StrategyError, match="unknown compression codec"):
        compression.encode(_delta(), "zip")


def test_decoding_grid_rebuilds_full_weights():
    global_w = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(3, np.float32)}
    local = {n: v + 0.25 for n, v in global_w.items()}
    wire, _ = compression.compress(local, global_w, "float16")
    reply = RecordDict(
        {
            "arrays": to_record(wire),
            "metrics": MetricRecord({"num-examples": 3}),
            compression.CODEC_KEY: ConfigRecord({"codec": "float16"}),
        }
    )
    content = compression.decode_reply(reply, to_record(global_w))
    assert compression.CODEC_KEY not in content
    arrays = content["arrays"]
    assert isinstance(arrays, ArrayRecord) and list(arrays) == ["w", "b"]
    for name, value in local.items():
        np.testing.assert_array_equal(arrays[name].numpy(), value)


@pytest.mark.slow
def test_compressed_run_sends_fewer_bytes_and_still_learns(tmp_path):
    import fedglobal

    raw = {
        "experiment": {"rounds": 2, "seed": 1, "output_dir": str(tmp_path)},
        "data": {"source": "synthetic:fedprox", "task": "classification", "num_regions": 6},
        "model": {"name": "mlp", "hidden": [32]},
        "client": {"batch_size": 16, "optimizer": "sgd", "learning_rate": 0.05},
        "strategy": {"min_available_clients": 6, "min_train_clients": 6},
        "output": {"tensorboard": False, "plots": False},
    }
    import json

    received = {}
    accuracy = {}
    for codec in ("none", "topk"):
        raw["client"].update({"compression": codec, "topk_fraction": 0.05})
        result = fedglobal.simulate(raw, quiet=True)
        summary = json.loads((result.run_dir / "summary.json").read_text())
        received[codec] = summary["comm"]["array_bytes_received"]
        accuracy[codec] = result.metric("accuracy")
    assert received["topk"] < received["none"] / 4
    assert accuracy["topk"].iloc[-1] > accuracy["topk"].iloc[0]
