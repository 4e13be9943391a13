"""One pfl-research run of an exported workload, in pfl's own idiom (run by peers.py).

    TF_USE_LEGACY_KERAS=1 .peers/pfl-venv/bin/python experiments/benchmarks/peers_pfl.py W.npz

Runs in pfl's own virtual environment (``pfl[tf]==0.6.0``, TensorFlow 2.21 with
tf-keras), never in fedglobal's, and imports nothing of fedglobal: everything it
needs is in the ``.npz`` that ``peers.py`` exported from fedglobal's data layer
(each region's encoded and standardised rows, the initial weights, the regions
trained in each round, the hyperparameters). Prints one JSON line.

Written as pfl's own benchmarks are (``benchmarks/image_classification/tf/train.py``
in apple/pfl-research): a compiled ``tf.keras`` model whose optimizer is the local
optimizer, ``TFModel`` with a central ``SGD(1.0)`` optimizer (FedAvg applies the
averaged update as is), ``FederatedDataset`` of per-user ``Dataset`` objects,
``SimulatedBackend`` with ``WeightByDatapoints`` (FedAvg weighted by examples, as
fedglobal's), ``FederatedAveraging`` and a ``CentralEvaluationCallback`` on every
region's test rows each round (fedglobal evaluates every region each round by
default). The user sampler yields the cohorts fedglobal's strategy samples, so
both systems train the same regions in the same rounds.
"""

from __future__ import annotations

import json
import os
import sys
import time

# Under Keras 3, pfl 0.6.0's TFModel keys variables by ``variable.name``, which Keras 3
# shortens to "kernel"/"bias": the layers' variables collide and training silently
# updates only some of them. tf-keras (legacy Keras 2) keeps full names.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf
from pfl.aggregate.simulate import SimulatedBackend
from pfl.aggregate.weighting import WeightByDatapoints
from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
from pfl.callback.base import TrainingProcessCallback
from pfl.callback.central_evaluation import CentralEvaluationCallback
from pfl.data.dataset import Dataset
from pfl.data.federated_dataset import FederatedDataset
from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
from pfl.model.tensorflow import TFModel


def build_model(meta: dict) -> tf.keras.Model:
    """fedglobal's zoo model (fedglobal/models/zoo.py) in tf.keras, without its input
    Normalization layer: the exported rows are already standardised with the same
    global mean and variance."""
    keras = tf.keras
    inputs = keras.Input(shape=(meta["input_dim"],), name="features")
    x = inputs
    if meta["model"] == "cnn":
        x = keras.layers.Reshape((28, 28, 1), name="image")(x)
        for i, filters in enumerate(meta["filters"]):
            x = keras.layers.Conv2D(filters, 3, padding="same", name=f"conv_{i}")(x)
            x = keras.layers.Activation("relu", name=f"activation_{i}")(x)
            x = keras.layers.MaxPooling2D(name=f"pool_{i}")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        for i, width in enumerate(meta["hidden"]):
            x = keras.layers.Dense(width, activation="relu", name=f"hidden_{i}")(x)
    elif meta["model"] != "logistic":
        raise SystemExit(f"peers_pfl: model {meta['model']!r} is not one of logistic, cnn")
    outputs = keras.layers.Dense(meta["num_classes"], activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs, name=meta["model"])


def local_optimizer(meta: dict) -> tf.keras.optimizers.Optimizer:
    name, lr = meta["optimizer"], meta["learning_rate"]
    if name == "sgd":
        return tf.keras.optimizers.SGD(lr)
    if name == "adam":
        return tf.keras.optimizers.Adam(lr)
    raise SystemExit(f"peers_pfl: optimizer {name!r} is not one of sgd, adam")


class LastMetrics(TrainingProcessCallback):
    """Keeps the central evaluation's metrics of the latest round."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
        self.values = {
            str(name): float(value)
            for name, value in aggregate_metrics.to_simple_dict().items()
            if "Central val" in str(name)
        }
        return False, type(aggregate_metrics)()


def run(path: str) -> dict:
    started = time.perf_counter()
    data = np.load(path)
    meta = json.loads(str(data["meta"]))
    tf.random.set_seed(meta["seed"])
    np.random.seed(meta["seed"])
    n_regions = len(meta["regions"])
    users = {
        i: (data[f"x_train_{i}"], data[f"y_train_{i}"].astype(np.int32)) for i in range(n_regions)
    }
    x_test = np.concatenate([data[f"x_test_{i}"] for i in range(n_regions)])
    y_test = np.concatenate([data[f"y_test_{i}"] for i in range(n_regions)]).astype(np.int32)
    initial = [data[f"w_{i}"] for i in range(meta["num_weights"])]
    cohorts = data["cohorts"]

    keras_model = build_model(meta)
    shapes = [tuple(v.shape) for v in keras_model.trainable_variables]
    if shapes != [w.shape for w in initial]:
        raise SystemExit(f"peers_pfl: model variables {shapes} != exported weights")
    keras_model.set_weights(initial)
    optimizer = local_optimizer(meta)
    keras_model.compile(optimizer, loss=tf.keras.losses.SparseCategoricalCrossentropy())
    # pfl 0.6.0 pitfall: TFModel._reset_local_optimizer is a tf.function traced on the
    # first user, before a lazily built optimizer has its slots; Adam's moments were
    # then never reset and carried over from one user to the next. Building the
    # optimizer first makes the traced reset cover every slot.
    optimizer.build(keras_model.trainable_variables)
    metrics = {
        "loss": tf.keras.metrics.SparseCategoricalCrossentropy(),
        "accuracy": tf.keras.metrics.SparseCategoricalAccuracy(),
    }
    model = TFModel(
        model=keras_model, metrics=metrics, central_optimizer=tf.keras.optimizers.SGD(1.0)
    )
    if len(model.variable_map) != len(keras_model.trainable_variables):
        raise SystemExit(
            f"peers_pfl: TFModel sees {len(model.variable_map)} variables, the model has "
            f"{len(keras_model.trainable_variables)} (names collide: set TF_USE_LEGACY_KERAS=1)"
        )

    # fedglobal's cohorts, in order; a user id is (round, region) so that the user's
    # Dataset holds its rows in the order fedglobal's client visits them that round
    # (one seeded permutation per round, the same on every local epoch, as pfl's
    # Dataset iterates): the same batches, so the same model up to float rounding
    schedule = iter((rnd, int(u)) for rnd, cohort in enumerate(cohorts.tolist(), 1) for u in cohort)

    def make_dataset(user: tuple[int, int]) -> Dataset:
        rnd, region = user
        order = data[f"order_{rnd}_{region}"]
        x, y = users[region]
        return Dataset(raw_data=[x[order], y[order]], user_id=f"{region}@{rnd}")

    training = FederatedDataset(make_dataset_fn=make_dataset, user_sampler=lambda: next(schedule))
    backend = SimulatedBackend(
        training_data=training, val_data=None, postprocessors=[WeightByDatapoints()]
    )
    eval_params = NNEvalHyperParams(local_batch_size=1024)
    last = LastMetrics()
    rounds, per_round = cohorts.shape
    FederatedAveraging().run(
        algorithm_params=NNAlgorithmParams(
            central_num_iterations=rounds,
            # per-user metrics before and after local training: fedglobal computes
            # none (its train loss comes from the fit itself), so only iteration 0
            # (which pfl always evaluates) pays for them
            evaluation_frequency=rounds,
            train_cohort_size=per_round,
            val_cohort_size=None,
        ),
        backend=backend,
        model=model,
        model_train_params=NNTrainHyperParams(
            local_learning_rate=meta["learning_rate"],
            local_num_epochs=meta["epochs"],
            local_batch_size=meta["batch_size"],
        ),
        model_eval_params=eval_params,
        callbacks=[
            CentralEvaluationCallback(
                Dataset(raw_data=[x_test, y_test]), model_eval_params=eval_params, frequency=1
            ),
            last,
        ],
    )
    accuracy = next((v for k, v in last.values.items() if k.endswith("accuracy")), None)
    return {
        "system": "pfl",
        "pfl_version": __import__("pfl").__version__,
        "tensorflow": tf.__version__,
        "keras": tf.keras.__name__,
        "variables": len(model.variable_map),
        "rounds": int(rounds),
        "accuracy": accuracy,
        "metrics": last.values,
        "run_s": round(time.perf_counter() - started, 2),
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: peers_pfl.py WORKLOAD.npz")
    print(json.dumps(run(sys.argv[1])), flush=True)
