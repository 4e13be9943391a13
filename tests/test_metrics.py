"""Pooled metrics from summed statistics equal metrics computed on pooled rows."""

from __future__ import annotations

import numpy as np
import pytest

from fedglobal import metrics


def test_regression_pooled_equals_direct():
    rng = np.random.default_rng(0)
    parts = [(rng.normal(size=n), rng.normal(size=n)) for n in (5, 17, 40)]
    pooled = metrics.finalize(
        metrics.pool(metrics.regression_stats(y, p) for y, p in parts), "regression"
    )
    y = np.concatenate([a for a, _ in parts])
    p = np.concatenate([b for _, b in parts])
    assert pooled["loss"] == pytest.approx(np.mean((p - y) ** 2))
    assert pooled["mae"] == pytest.approx(np.mean(np.abs(p - y)))
    assert pooled["rmse"] == pytest.approx(np.sqrt(np.mean((p - y) ** 2)))
    assert pooled["r2"] == pytest.approx(1 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2))


def test_classification_golden():
    # 4 rows, 3 classes; predictions: 0->0, 1->1, 1->2 (wrong), 2->2
    y = np.array([0, 1, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.1, 0.3, 0.6], [0.2, 0.2, 0.6]])
    m = metrics.finalize(metrics.classification_stats(y, probs, 3), "classification")
    assert m["accuracy"] == pytest.approx(0.75)
    # precision: c0 1/1, c1 1/1, c2 1/2 ; recall: c0 1, c1 1/2, c2 1
    assert m["precision"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert m["recall"] == pytest.approx((1 + 0.5 + 1) / 3)
    f1 = [1.0, 2 * 0.5 / 1.5, 2 * 0.5 / 1.5]
    assert m["f1"] == pytest.approx(np.mean(f1))
    assert m["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.7, 0.3, 0.6])))


def test_fairness_names_the_worst_region_from_the_last_round():
    import pandas as pd

    rows = [
        (1, "north", "test", "r2", 0.9),  # an earlier round: ignored
        (2, "north", "test", "r2", 0.8),
        (2, "south", "test", "r2", -0.4),
        (2, "east", "test", "r2", 0.5),
        (2, "west", "test", "r2", 0.6),
        (2, "all", "test", "r2", 0.7),  # pooled: not a region
        (2, "south", "train", "r2", 0.9),  # another split
        (2, "north", "test", "mae", 1.0),  # another metric
    ]
    history = pd.DataFrame(rows, columns=["round", "region", "split", "metric", "value"])
    out = metrics.fairness(history, "regression")
    assert out["metric"] == "r2" and out["round"] == 2 and out["regions"] == 4
    assert out["worst_region"] == {"name": "south", "value": -0.4}
    assert out["best_region"] == {"name": "north", "value": 0.8}
    assert out["median"] == pytest.approx(0.55)
    assert out["p10"] == pytest.approx(-0.4 + 0.3 * 0.9)  # numpy's linear interpolation
    assert out["spread"] == pytest.approx(1.2)
    assert metrics.fairness(history[history.region == "all"], "regression") is None
    assert metrics.fairness(history, "classification") is None  # no accuracy rows
