"""The extra train metrics strategies ask for (strategies.client_metrics), on both
client paths: Keras ``fit`` and cohort training; q-FFL and FedNova end to end with
the cohort path (no fallback) giving the run Keras ``fit`` gives."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

import fedglobal
from clients.regional import RegionalClient
from fedglobal import data
from fedglobal.config import load_config
from strategies.client_metrics import KNOWN, LEARNING_RATE, LOCAL_STEPS, START_LOSS

SIZES = (23, 9, 40)  # unequal rows: unequal local steps with epochs


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = []
    for i, n in enumerate(SIZES):
        x = rng.normal(size=(n, 4))
        y = (x[:, 0] + x[:, 1] * (i - 1) > 0).astype(int)
        frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(4)])
        frame.insert(0, "r", f"r{i}")
        frame["y"] = y
        frames.append(frame)
    path = tmp_path_factory.mktemp("reports") / "rows.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def raw_experiment(csv, tmp_path, strategy, cohort):
    return {
        "experiment": {"rounds": 2, "output_dir": str(tmp_path), "name": "reports", "seed": 3},
        "data": {
            "source": f"csv:{csv}",
            "region": "r",
            "target": "y",
            "task": "classification",
            "min_region_rows": 2,
        },
        "model": {"name": "mlp", "hidden": [5]},
        "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 4, "cohort": cohort},
        "strategy": {"min_available_clients": 3, "min_train_clients": 3, **strategy},
        "output": {"tensorboard": False, "plots": False},
    }


def test_keras_fit_reports_the_start_loss_steps_and_learning_rate(csv):
    cfg = load_config(raw_experiment(csv, ".", {"name": "fedavg"}, False))
    tables = [data.load_region(cfg, r) for r in data.list_regions(cfg)]
    schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
    client = RegionalClient(data.encode(tables[0], schema), cfg, schema)
    start = client.get_weights()
    plain = client.fit(start, 1)
    assert set(plain.metrics) == {"loss"}  # nothing asked, nothing extra on the wire
    result = client.fit(start, 1, report=KNOWN)
    # the loss at the start weights, as Keras evaluates the compiled loss on the rows
    client.set_weights(start)
    x, y = client.arrays.x_train, client.arrays.y_train
    expected = keras.losses.SparseCategoricalCrossentropy()(y, client.model.inner(x))
    assert result.metrics[START_LOSS] == pytest.approx(float(expected), rel=1e-5)
    assert result.metrics[LOCAL_STEPS] == client.plan(1).steps == -(-len(x) // 4)
    assert result.metrics[LEARNING_RATE] == pytest.approx(0.1)
    for name in start:  # reporting does not change the training
        np.testing.assert_array_equal(result.weights[name], plain.weights[name])
    short = client.fit(start, 1, local_steps=2, report=[LOCAL_STEPS])
    assert short.metrics == {"loss": short.metrics["loss"], LOCAL_STEPS: 2}


@pytest.mark.parametrize(
    "strategy", [{"name": "qffl", "q": 2.0}, {"name": "fednova"}], ids=["qffl", "fednova"]
)
def test_cohort_path_trains_the_same_run_without_fallback(csv, tmp_path, strategy):
    results = {}
    for cohort in (True, False):
        raw = raw_experiment(csv, tmp_path / str(cohort), strategy, cohort)
        results[cohort] = fedglobal.simulate(raw, quiet=True)
    training = results[True].summary["training"]
    assert training["path"] == "cohort" and training["fallbacks"] == {}
    assert results[False].summary["training"]["path"] == "keras-fit"
    runs = [r.history.sort_values(["round", "region", "split", "metric"]) for r in results.values()]
    np.testing.assert_allclose(runs[0]["value"], runs[1]["value"], rtol=1e-4, atol=1e-5)
    baseline = fedglobal.simulate(
        raw_experiment(csv, tmp_path / "fedavg", {"name": "fedavg"}, True), quiet=True
    )
    final = baseline.history.sort_values(["round", "region", "split", "metric"])
    assert not np.allclose(final["value"], runs[0]["value"])  # the rule changed the run
