"""FedProx on the client (Li et al. 2020): the proximal term inside Keras's train step.

mu = 0 must be FedAvg exactly; mu > 0 must follow grad F(w) + mu (w - w_global);
the compiled model is reused (DESIGN decision 5); ``local_steps`` bounds a
straggler's work.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from clients.models import make_optimizer
from clients.regional import RegionalClient
from fedglobal import data
from fedglobal.config import load_config
from fedglobal.data import make_dataset, shuffle_seed
from fedglobal.models import build_model


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = []
    for i, n in enumerate((60, 90)):
        x = rng.normal(size=(n, 3))
        y = x @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
        frames.append(
            pd.DataFrame({"r": f"r{i}", "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
        )
    path = tmp_path_factory.mktemp("fedprox") / "rows.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def setup(csv, model=None, **client):
    cfg = load_config(
        {
            "data": {"source": f"csv:{csv}", "region": "r", "target": "y", "test_fraction": 0.2},
            "model": model or {"name": "mlp", "hidden": [4]},
            "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 1000, **client},
        }
    )
    tables = [data.load_region(cfg, r) for r in data.list_regions(cfg)]
    schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
    return cfg, schema, [data.encode(t, schema) for t in tables]


def initial(client):
    rng = np.random.default_rng(1)
    return {
        name: rng.normal(scale=0.5, size=w.shape).astype(w.dtype)
        for name, w in client.get_weights().items()
    }


def test_mu_zero_trains_exactly_like_a_plain_keras_model(csv):
    """The proximal wrapper with mu = 0 against the zoo model compiled and fitted directly."""
    model_cfg = {"name": "mlp", "hidden": [8], "batch_norm": True}
    cfg, schema, arrays = setup(csv, model_cfg, optimizer="adam", learning_rate=0.01, batch_size=8)
    cfg = cfg.replace({"client.epochs": 2})
    client = RegionalClient(arrays[0], cfg, schema)
    start = initial(client)
    ours = client.fit(start, server_round=2, proximal_mu=0.0).weights
    assert ours.keys() == client.fit(start, server_round=2).weights.keys()

    seed = shuffle_seed(cfg.experiment.seed, 2, client.region)
    keras.utils.set_random_seed(seed)
    plain = build_model(cfg.model, schema)
    plain.compile(optimizer=make_optimizer(cfg.client), loss="mse")
    plain.set_weights([start[v.path] for v in plain.weights])
    x, y = arrays[0].x_train, arrays[0].y_train
    order = client.plan(2).order  # the round's seeded row order (both training paths use it)
    ds = make_dataset(x[order], y[order], batch_size=8, shuffle=False)
    plain.fit(ds, epochs=2, shuffle=False, verbose=0)
    for var in plain.weights:
        assert not np.array_equal(var.numpy(), start[var.path]), var.path
        np.testing.assert_array_equal(ours[var.path], var.numpy(), err_msg=var.path)


def test_proximal_term_golden_against_manual_gradients(csv):
    """Two full-batch SGD steps: w2 = w1 - lr * (grad F(w1) + mu * (w1 - w0))."""
    cfg, schema, arrays = setup(csv, steps=2)
    # one batch = exactly one pass over the rows (the pipeline repeats before batching)
    cfg = cfg.replace({"client.batch_size": len(arrays[0].x_train)})
    client = RegionalClient(arrays[0], cfg, schema)
    start = initial(client)
    mu, lr = 0.7, 0.1
    ours = client.fit(start, server_round=1, proximal_mu=mu).weights

    plain = build_model(cfg.model, schema)
    names = [v.path for v in plain.weights]
    plain.set_weights([start[n] for n in names])
    x = tf.constant(arrays[0].x_train)
    y = tf.constant(arrays[0].y_train.reshape(-1, 1), dtype=tf.float32)

    def grads():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(plain(x, training=True) - y))
        variables = plain.trainable_variables
        return {
            v.path: g.numpy()
            for v, g in zip(variables, tape.gradient(loss, variables), strict=True)
        }

    w0 = {v.path: v.numpy() for v in plain.trainable_variables}
    g0 = grads()  # the proximal term is 0 at w = w_global
    for v in plain.trainable_variables:
        v.assign(w0[v.path] - lr * g0[v.path])
    w1 = {v.path: v.numpy() for v in plain.trainable_variables}
    g1 = grads()
    for name in w0:
        expected = w1[name] - lr * (g1[name] + mu * (w1[name] - w0[name]))
        np.testing.assert_allclose(ours[name], expected, rtol=1e-5, atol=1e-6, err_msg=name)
    plain_step = {n: w1[n] - lr * g1[n] for n in w0}
    assert any(not np.allclose(ours[n], plain_step[n], atol=1e-6) for n in w0)


def test_mu_pulls_towards_the_global_weights(csv):
    cfg, schema, arrays = setup(csv, steps=20, learning_rate=0.05)
    client = RegionalClient(arrays[1], cfg, schema)
    start = initial(client)

    def drift(mu):
        out = client.fit(start, server_round=1, proximal_mu=mu).weights
        return sum(float(np.sum((out[n] - start[n]) ** 2)) for n in start)

    assert drift(0.0) > drift(0.5) > drift(4.0) > 0


def test_the_compiled_model_is_reused_across_rounds_and_mu(csv):
    cfg, schema, arrays = setup(csv, batch_size=16)
    a = RegionalClient(arrays[0], cfg, schema)
    b = RegionalClient(arrays[1], cfg, schema)
    assert a.model is b.model  # one compiled model per process and settings
    start = initial(a)
    a.fit(start, server_round=1)
    train_function = a.model.train_function
    for server_round, mu in [(2, 0.5), (3, 0.0), (4, 2.0)]:
        b.fit(start, server_round=server_round, proximal_mu=mu)
    assert a.model.train_function is train_function  # not rebuilt, not retraced by us
    assert a.variable_names == [v.path for v in build_model(cfg.model, schema).weights]
    assert a.model.proximal_mu == 2.0


def test_local_steps_bound_a_stragglers_work(csv):
    cfg, schema, arrays = setup(csv, batch_size=8)
    client = RegionalClient(arrays[0], cfg, schema)
    full = client.full_steps()
    assert full == int(np.ceil(len(arrays[0].x_train) / 8))
    client.fit(initial(client), server_round=1, local_steps=3)
    assert int(client.model.optimizer.iterations.numpy()) == 3
    client.fit(initial(client), server_round=1, local_steps=full + 50)  # capped at full work
    assert int(client.model.optimizer.iterations.numpy()) == full
    with pytest.raises(ValueError, match="local_steps"):
        client.fit(initial(client), server_round=1, local_steps=0)


def test_dropout_masks_derive_from_seed_round_and_region(csv):
    model_cfg = {"name": "mlp", "hidden": [16], "dropout": 0.5}
    cfg, schema, arrays = setup(csv, model_cfg, batch_size=8)
    client = RegionalClient(arrays[0], cfg, schema)
    start = initial(client)
    a = client.fit(start, server_round=3).weights
    client.fit(start, server_round=4)  # advances the layers' random streams
    b = client.fit(start, server_round=3).weights
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


MIRRORED = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from clients.regional import RegionalClient
    from fedglobal import data
    from fedglobal.config import load_config

    def client_for(distribute):
        cfg = load_config({
            "data": {"source": "csv:" + sys.argv[1], "region": "r", "target": "y"},
            "model": {"name": "mlp", "hidden": [8]},
            "client": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 16,
                       "epochs": 2, "distribute": distribute},
        })
        tables = [data.load_region(cfg, r) for r in data.list_regions(cfg)]
        schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
        return RegionalClient(data.encode(tables[0], schema), cfg, schema)

    single, mirrored = client_for("default"), client_for("mirrored")
    rng = np.random.default_rng(3)
    start = {n: rng.normal(scale=0.3, size=w.shape).astype(w.dtype)
             for n, w in single.get_weights().items()}
    plain = single.fit(start, server_round=1).weights
    a = single.fit(start, server_round=1, proximal_mu=2.0).weights
    b = mirrored.fit(start, server_round=1, proximal_mu=2.0).weights
    print(json.dumps({
        "replicas": mirrored._compiled.strategy.num_replicas_in_sync,
        "max_diff": max(float(np.abs(a[n] - b[n]).max()) for n in a),
        "prox_effect": max(float(np.abs(a[n] - plain[n]).max()) for n in a),
    }))
    """
)


def test_proximal_term_counts_once_across_mirrored_replicas(csv):
    """Two replicas, same global batch: the term is scaled by 1/replicas like Keras's loss."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(csv)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["prox_effect"] > 1e-2  # mu = 2 changed the training
    assert result["max_diff"] < 1e-5  # and the mirrored run agrees with one device
