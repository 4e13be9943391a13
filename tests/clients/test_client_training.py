"""RegionalClient: FedAvg maths against centralised SGD, and Keras client options."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clients.regional import RegionalClient
from fedglobal import data
from fedglobal.config import load_config
from strategies.aggregate import weighted_average


def _iid_csv(tmp_path, n_per_region=(60, 90)):
    rng = np.random.default_rng(0)
    frames = []
    for i, n in enumerate(n_per_region):
        x = rng.normal(size=(n, 3))
        y = x @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
        frames.append(
            pd.DataFrame({"r": f"r{i}", "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
        )
    path = tmp_path / "iid.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def _setup(tmp_path, **client):
    path = _iid_csv(tmp_path)
    cfg = load_config(
        {
            "data": {"source": f"csv:{path}", "region": "r", "target": "y", "test_fraction": 0.2},
            "model": {"name": "mlp", "hidden": [4]},
            "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 1000, **client},
        }
    )
    tables = [data.load_region(cfg, r) for r in data.list_regions(cfg)]
    schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
    arrays = [data.encode(t, schema) for t in tables]
    return cfg, schema, arrays


def _initial(client: RegionalClient) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        name: rng.normal(scale=0.5, size=w.shape).astype(w.dtype)
        for name, w in client.get_weights().items()
    }


def test_fedavg_of_one_full_batch_sgd_step_equals_centralised_sgd(tmp_path):
    cfg, schema, arrays = _setup(tmp_path)
    clients = [RegionalClient(a, cfg, schema) for a in arrays]
    start = _initial(clients[0])
    results = [c.fit(start, server_round=1) for c in clients]
    fedavg = weighted_average(
        (c.region, r.weights, r.num_examples) for c, r in zip(clients, results, strict=True)
    )

    pooled = data.RegionArrays(
        region="pooled",
        x_train=np.concatenate([a.x_train for a in arrays]),
        y_train=np.concatenate([a.y_train for a in arrays]),
        x_test=arrays[0].x_test,
        y_test=arrays[0].y_test,
    )
    central = RegionalClient(pooled, cfg, schema).fit(start, server_round=1).weights
    for name in start:
        assert not np.allclose(central[name], start[name]) or name.startswith("normalize")
        np.testing.assert_allclose(fedavg[name], central[name], rtol=1e-5, atol=1e-6)


def test_fedavg_of_one_client_is_that_client(tmp_path):
    cfg, schema, arrays = _setup(tmp_path)
    client = RegionalClient(arrays[0], cfg, schema)
    result = client.fit(_initial(client), server_round=1)
    averaged = weighted_average([(client.region, result.weights, result.num_examples)])
    for name, value in result.weights.items():
        np.testing.assert_array_equal(averaged[name], value)


def test_training_is_reproducible_and_depends_on_the_round(tmp_path):
    cfg, schema, arrays = _setup(tmp_path, batch_size=8, optimizer="adam", learning_rate=0.01)
    client = RegionalClient(arrays[1], cfg, schema)
    start = _initial(client)
    a = client.fit(start, server_round=3).weights
    b = client.fit(start, server_round=3).weights  # optimizer state reset, same shuffle
    c = client.fit(start, server_round=4).weights  # another shuffle order
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert any(not np.array_equal(a[n], c[n]) for n in a)


@pytest.mark.parametrize("options", [{"steps": 3}, {"gradient_accumulation_steps": 2}])
def test_keras_client_options(tmp_path, options):
    cfg, schema, arrays = _setup(tmp_path, batch_size=8, **options)
    client = RegionalClient(arrays[0], cfg, schema)
    start = _initial(client)
    result = client.fit(start, server_round=1)
    assert np.isfinite(result.metrics["loss"])
    assert any(not np.array_equal(result.weights[n], start[n]) for n in start)
    ev = client.evaluate()
    assert set(ev.metrics) == {"loss", "mae", "rmse", "r2"}
    assert ev.num_examples == len(arrays[0].x_test)


def test_steps_bound_the_number_of_optimizer_updates(tmp_path):
    cfg, schema, arrays = _setup(tmp_path, batch_size=8, steps=3)
    client = RegionalClient(arrays[0], cfg, schema)
    client.fit(_initial(client), server_round=1)
    assert int(client.model.optimizer.iterations.numpy()) == 3
