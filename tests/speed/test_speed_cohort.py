"""Cohort training (clients/cohort.py) equals the sequential path (Keras fit) to 1e-5.

Same seeds, same batch order: each region's weights after a cohort round must
equal what ``RegionalClient.fit`` gives for that region alone, for dense, conv,
BatchNorm, Embedding and recurrent layers, with SGD and Adam, ragged regions
(partial last batches), epochs or fixed steps, and FedProx's proximal term.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import pandas as pd
import pytest

from clients import cohort
from clients.cohort import GRAPH, PER_REGION, CohortJob, trainer_for
from clients.regional import RegionalClient
from fedglobal import data
from fedglobal.config import load_config
from fedglobal.models import register

# -- small models outside the zoo: tokens -> Embedding, sequences -> RNN ---------------


@register("speedtest_embedding")
def _embedding_model(config, schema):
    inputs = keras.Input(shape=(schema.input_dim,), name="features")
    x = keras.layers.Embedding(8, 3, name="embed")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(schema.num_classes, "softmax", name="output")(x))


@register("speedtest_rnn")
def _rnn_model(config, schema):
    inputs = keras.Input(shape=(schema.input_dim,), name="features")
    x = keras.layers.Reshape((3, schema.input_dim // 3), name="seq")(inputs)  # 3 time steps
    x = keras.layers.SimpleRNN(3, return_sequences=True, name="rnn")(x)
    x = keras.layers.GRU(2, name="gru")(x)
    return keras.Model(inputs, keras.layers.Dense(schema.num_classes, "softmax", name="output")(x))


@register("speedtest_conv")
def _conv_model(config, schema):
    inputs = keras.Input(shape=(schema.input_dim,), name="features")
    x = keras.layers.Reshape((3, 3, 1), name="image")(inputs)
    x = keras.layers.Conv2D(2, 2, padding="same", use_bias=False, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(schema.num_classes, "softmax", name="output")(x))


@register("speedtest_dropout")
def _dropout_model(config, schema):
    inputs = keras.Input(shape=(schema.input_dim,), name="features")
    x = keras.layers.Dense(4, name="hidden")(inputs)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    return keras.Model(inputs, keras.layers.Dense(schema.num_classes, "softmax", name="output")(x))


SIZES = (23, 9, 40)  # ragged: partial last batches of different lengths


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    rng = np.random.default_rng(0)
    frames = []
    for i, n in enumerate(SIZES):
        x = rng.integers(0, 8, size=(n, 9)).astype(float)  # tokens for the Embedding model too
        y = (x[:, 0] + x[:, 4] + i > 8).astype(int) + (x[:, 8] > 5)
        frame = pd.DataFrame(x, columns=[f"f{j}" for j in range(9)])
        frame.insert(0, "r", f"r{i}")
        frame["y"] = y
        frames.append(frame)
    path = tmp_path_factory.mktemp("cohort") / "rows.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def setup(csv, model, task="classification", **client):
    # The clients' initial weights (which starts() perturbs) come from Keras's global
    # seed: fix it, so that the test does not depend on what ran before in the process.
    # With Adam, recurrent layers amplify rounding where gradients are tiny (the step is
    # about lr * sign(g)): over random starts the two paths differed by up to 3e-4.
    keras.utils.set_random_seed(0)
    cfg = load_config(
        {
            "data": {
                "source": f"csv:{csv}",
                "region": "r",
                "target": "y",
                "task": task,
                "test_fraction": 0.2,
                "min_region_rows": 2,
            },
            "model": model,
            "client": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 4, **client},
        }
    )
    tables = [data.load_region(cfg, r) for r in data.list_regions(cfg)]
    schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
    clients = [RegionalClient(data.encode(t, schema), cfg, schema) for t in tables]
    return cfg, clients


def starts(client, count):
    out = []
    for k in range(count):
        rng = np.random.default_rng(k)
        out.append(
            {
                name: (w + rng.normal(scale=0.1, size=w.shape)).astype(w.dtype)
                if "moving_variance" not in name and "seed" not in name
                else w
                for name, w in client.get_weights().items()
            }
        )
    return out


def compare(clients, *, server_round=3, mu=0.0, local_steps=None, atol=1e-5):
    weights = starts(clients[0], len(clients))
    sequential = [
        c.fit(w, server_round, proximal_mu=mu, local_steps=local_steps)
        for c, w in zip(clients, weights, strict=True)
    ]
    jobs = [
        CohortJob(c, w, c.plan(server_round, local_steps=local_steps), mu)
        for c, w in zip(clients, weights, strict=True)
    ]
    trainer = trainer_for(clients[0]._compiled, jobs[0].plan.batch_size, mu > 0)
    cohort = trainer.fit(jobs)
    for seq, coh, start in zip(sequential, cohort, weights, strict=True):
        assert seq.num_examples == coh.num_examples
        assert seq.weights.keys() == coh.weights.keys()
        moved = False
        for name in seq.weights:
            np.testing.assert_allclose(
                coh.weights[name], seq.weights[name], rtol=atol, atol=atol, err_msg=name
            )
            moved |= not np.allclose(seq.weights[name], start[name])
        assert moved
        assert coh.metrics["loss"] == pytest.approx(seq.metrics["loss"], rel=1e-5, abs=1e-6)
    return trainer


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_dense(csv, optimizer):
    _, clients = setup(csv, {"name": "mlp", "hidden": [5]}, optimizer=optimizer, epochs=2)
    trainer = compare(clients)
    assert trainer.vectorized


def test_batchnorm_statistics_skip_padded_rows(csv):
    # SGD: the zoo's Dense before BatchNorm has a bias whose true gradient is 0 (BN
    # removes it); Adam would scale its rounding noise up to lr-sized steps, so the
    # Adam + BatchNorm case is the conv model below, whose conv has no bias.
    _, clients = setup(csv, {"name": "mlp", "hidden": [5], "batch_norm": True}, epochs=2)
    trainer = compare(clients)
    assert trainer.vectorized


def test_dense_regression_with_momentum_and_fedprox(csv):
    _, clients = setup(
        csv,
        {"name": "mlp", "hidden": [4]},
        task="regression",
        optimizer="sgd",
        momentum=0.9,
        learning_rate=0.01,
    )
    compare(clients, mu=0.5)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adagrad", "adamw"])
def test_other_optimizers(csv, optimizer):
    _, clients = setup(csv, {"name": "logistic"}, optimizer=optimizer, learning_rate=0.01)
    compare(clients)


def test_fixed_steps_and_stragglers(csv):
    _, clients = setup(csv, {"name": "logistic"}, optimizer="adam", steps=7)
    compare(clients)  # batches run across passes
    compare(clients, local_steps=3)  # a straggler's partial work


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_embedding(csv, optimizer):
    _, clients = setup(csv, {"name": "speedtest_embedding"}, optimizer=optimizer)
    compare(clients)


def test_conv_and_batchnorm(csv):
    _, clients = setup(csv, {"name": "speedtest_conv"}, optimizer="adam")
    trainer = compare(clients)
    assert trainer.mode == GRAPH  # convolutions: TensorFlow's kernels (cohort.modes)


@register("speedtest_conv_variants")
def _conv_variants_model(config, schema):
    """Strides, valid padding, dilation and a bias: every branch of the im2col rewrite."""
    inputs = keras.Input(shape=(schema.input_dim,), name="features")
    x = keras.layers.Reshape((28, 28, 1), name="image")(inputs)
    x = keras.layers.Conv2D(3, 3, strides=2, padding="same", name="strided")(x)
    x = keras.layers.Conv2D(2, (3, 2), padding="valid", dilation_rate=2, name="dilated")(x)
    x = keras.layers.Conv2D(2, 2, strides=(2, 1), padding="valid", name="valid")(x)
    x = keras.layers.Flatten(name="flat")(x)
    return keras.Model(inputs, keras.layers.Dense(schema.num_classes, "softmax", name="output")(x))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three regions of 28x28 images (784 features), ragged."""
    rng = np.random.default_rng(1)
    frames = []
    for i, n in enumerate((11, 6, 9)):
        x = rng.normal(size=(n, 784)).round(3)
        y = (x[:, :392].sum(axis=1) > 0).astype(int) + (i == 2)
        frame = pd.DataFrame(x, columns=[f"p{j}" for j in range(784)])
        frame.insert(0, "r", f"r{i}")
        frame["y"] = y
        frames.append(frame)
    path = tmp_path_factory.mktemp("images") / "images.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    ("model", "optimizer"),
    [
        ({"name": "cnn", "filters": [3, 4], "hidden": [5]}, "adam"),
        # SGD: the conv bias before BatchNorm has a true gradient of 0 (see above)
        ({"name": "cnn", "filters": [2], "hidden": [], "batch_norm": True}, "sgd"),
        ({"name": "speedtest_conv_variants"}, "adam"),
    ],
)
def test_conv_models_fully_vectorised(images, model, optimizer):
    """The zoo's CNN (with and without BatchNorm) and strided / dilated / valid convolutions:
    same weights as Keras fit, in the graph program (cohort.modes)."""
    _, clients = setup(images, model, optimizer=optimizer, learning_rate=0.01)
    trainer = compare(clients, atol=2e-5)
    assert trainer.mode == GRAPH


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_region_by_region_program(csv, monkeypatch, optimizer):
    """The XLA loop over regions (the fallback of models that do not vectorise): same
    weights as Keras fit, ragged regions and a straggler that stops early included."""
    monkeypatch.setattr(cohort, "modes", lambda model: (PER_REGION,))
    _, clients = setup(csv, {"name": "mlp", "hidden": [5]}, optimizer=optimizer, epochs=2)
    trainer = compare(clients)
    assert trainer.mode == PER_REGION
    compare(clients, local_steps=3)


def test_recurrent(csv):
    _, clients = setup(csv, {"name": "speedtest_rnn"}, optimizer="adam")
    compare(clients)


@pytest.mark.parametrize(
    "model", [{"name": "speedtest_dropout"}, {"name": "mlp", "hidden": [6], "dropout": 0.3}]
)
def test_dropout_equals_keras_fit_and_is_vectorised(csv, model):
    """Dropout's masks come from a counter-based hash (clients.models.counter_uniform),
    the same in Keras fit and in the cohort program, which stays vectorised."""
    _, clients = setup(csv, model, optimizer="adam")
    trainer = compare(clients)
    assert trainer.vectorized


def test_counter_uniform_is_uniform_and_seeded():
    from clients.models import counter_uniform

    u = counter_uniform(np.array([7, 0]), (200, 50)).numpy()
    assert u.shape == (200, 50) and 0.0 <= u.min() and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1] < 0.02  # neighbours
    np.testing.assert_array_equal(u, counter_uniform(np.array([7, 0]), (200, 50)).numpy())
    assert (u != counter_uniform(np.array([7, 1]), (200, 50)).numpy()).mean() > 0.99
    assert (u != counter_uniform(np.array([8, 0]), (200, 50)).numpy()).mean() > 0.99


def test_dropout_trains_and_is_reproducible(csv):
    """Dropout's masks are seeded by (seed, round, region): the same round twice gives
    the same weights, another round others."""
    _, clients = setup(csv, {"name": "speedtest_dropout"}, optimizer="sgd")
    weights = starts(clients[0], len(clients))
    jobs = [CohortJob(c, w, c.plan(3)) for c, w in zip(clients, weights, strict=True)]
    trainer = trainer_for(clients[0]._compiled, 4, False)
    first, again = trainer.fit(jobs), trainer.fit(jobs)
    other = trainer.fit([CohortJob(c, w, c.plan(4)) for c, w in zip(clients, weights, strict=True)])
    for a, b, c, start in zip(first, again, other, weights, strict=True):
        for name in a.weights:
            np.testing.assert_array_equal(a.weights[name], b.weights[name])
        assert any(not np.allclose(a.weights[n], start[n]) for n in a.weights)
        assert any(not np.array_equal(a.weights[n], c.weights[n]) for n in a.weights)


def experiment(csv, tmp_path, *, rounds, model):
    """An end-to-end experiment on the three regions of ``csv``."""
    return {
        "experiment": {"rounds": rounds, "output_dir": str(tmp_path), "name": "cohort"},
        "data": {
            "source": f"csv:{csv}",
            "region": "r",
            "target": "y",
            "task": "classification",
            "min_region_rows": 2,
        },
        "model": {"name": model},
        "strategy": {"min_available_clients": 3, "min_train_clients": 3},
        "output": {"tensorboard": False, "plots": False},
    }


@pytest.mark.parametrize(
    ("optimizer", "extra"), [("sgd", {"momentum": 0.9}), ("adam", {}), ("adamw", {})]
)
def test_gradient_accumulation_vectorises_and_equals_keras_fit(csv, optimizer, extra):
    """Every optimizer option the config offers runs in the cohort program: an update
    every N steps with the mean gradient, Adam's step count divided by N."""
    _, clients = setup(
        csv,
        {"name": "mlp", "hidden": [5]},
        optimizer=optimizer,
        learning_rate=0.05,
        gradient_accumulation_steps=3,
        epochs=2,
        **extra,
    )
    assert clients[0]._compiled.model.optimizer.gradient_accumulation_steps == 3
    trainer = compare(clients)  # 4..16 steps per region: partial accumulations at the end
    assert trainer.vectorized


def test_unsupported_model_falls_back_logs_and_still_trains(csv, tmp_path, caplog):
    """End to end: a layer XLA cannot compile -> the log says so, the round trains."""
    import fedglobal

    raw = experiment(csv, tmp_path, rounds=1, model="speedtest_unsupported")
    raw["client"] = {"batch_size": 4, "cohort": True}
    with caplog.at_level(logging.INFO, logger="clients.cohort"):
        result = fedglobal.simulate(raw, quiet=True)
    assert any("one by one" in r.getMessage() for r in caplog.records), caplog.text
    assert result.history[result.history["round"] == 1].shape[0] > 0
    training = result.summary["training"]
    assert training["path"] == "keras-fit"
    (reason,) = training["fallbacks"]
    assert "does not compile as a cohort" in reason and training["fallbacks"][reason] == [1]


@pytest.mark.parametrize(
    ("cohort", "path", "reason"),
    [("auto", "cohort", None), (False, "keras-fit", "client.cohort = false")],
)
def test_run_records_which_path_trained_each_round(csv, tmp_path, cohort, path, reason):
    """rounds.csv (trained_by, fallback_reason) and summary.json's training say which path
    trained each round, and why not the cohort; the default is the cohort."""
    import fedglobal

    raw = experiment(csv, tmp_path, rounds=2, model="logistic")
    if cohort != "auto":
        raw["client"] = {"cohort": cohort}
    result = fedglobal.simulate(raw, quiet=True)
    assert result.config.client.cohort == cohort
    rounds = pd.read_csv(result.run_dir / "rounds.csv")
    trained = rounds[rounds["round"] >= 1]
    assert list(trained["trained_by"]) == [path, path]
    training = result.summary["training"]
    assert training["path"] == path and training["by_round"] == {"1": path, "2": path}
    assert training["fallbacks"] == ({reason: [1, 2]} if reason else {})


@register("speedtest_unsupported")
def _unsupported_model(config, schema):
    """A layer whose op (tf.py_function) XLA cannot compile."""
    import tensorflow as tf

    class PyIdentity(keras.layers.Layer):
        def call(self, x):
            y = tf.py_function(lambda t: t, [x], x.dtype)
            y.set_shape(x.shape)
            return y

    inputs = keras.Input(shape=(schema.input_dim,), name="features")
    x = PyIdentity(name="py")(inputs)
    return keras.Model(inputs, keras.layers.Dense(schema.num_classes, "softmax", name="output")(x))
