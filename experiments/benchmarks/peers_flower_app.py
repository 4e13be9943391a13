"""Flower's usual TensorFlow app for the peers benchmark (W1), as Flower's examples write it.

``peers.py flower`` submits this module with ``flwr run`` to a ``flower-superlink
--simulation`` (Flower's Simulation Engine on Ray): components
``peers_flower_app:server`` and ``peers_flower_app:client``. It imports nothing of
fedglobal; the rows and initial weights come from the ``.npz`` that ``peers.py``
exported from fedglobal's data layer (``data-path`` in the run config). Simulated
node ``partition-id = i`` is the i-th region in sorted order, as in fedglobal.

The ClientApp follows Flower's quickstart-tensorflow (Message API): every train or
evaluate message builds and compiles the Keras model, sets the received weights,
loads the node's partition and calls ``model.fit`` / ``model.evaluate``. The
ServerApp runs Flower's own ``FedAvg`` (its own client sampling, weighted by
``num-examples``) and federated evaluation on every node each round (Flower's
default ``fraction_evaluate = 1.0``, as fedglobal's), then writes the last round's
pooled accuracy to ``result-path``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

client = ClientApp()
server = ServerApp()


def load_model(input_dim: int, num_classes: int, learning_rate: float):
    """Multinomial logistic regression, compiled (Flower's ``task.load_model``)."""
    import keras

    model = keras.Sequential(
        [keras.Input(shape=(input_dim,)), keras.layers.Dense(num_classes, activation="softmax")]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def load_data(path: str, partition_id: int) -> tuple[np.ndarray, ...]:
    """The node's partition: (x_train, y_train, x_test, y_test)."""
    with np.load(path) as data:
        return tuple(
            data[f"{k}_{partition_id}"] for k in ("x_train", "y_train", "x_test", "y_test")
        )


def _meta(path: str) -> dict:
    with np.load(path) as data:
        return json.loads(str(data["meta"]))


def _model_for(context: Context, msg: Message):
    cfg = context.run_config
    meta = _meta(str(cfg["data-path"]))
    model = load_model(meta["input_dim"], meta["num_classes"], float(cfg["learning-rate"]))
    model.set_weights(msg.content["arrays"].to_numpy_ndarrays())
    return model


@client.train()
def train(msg: Message, context: Context) -> Message:
    model = _model_for(context, msg)
    x, y, _, _ = load_data(
        str(context.run_config["data-path"]), context.node_config["partition-id"]
    )
    history = model.fit(
        x,
        y,
        epochs=int(context.run_config["local-epochs"]),
        batch_size=int(context.run_config["batch-size"]),
        verbose=0,
    )
    metrics = {"train_loss": float(history.history["loss"][-1]), "num-examples": len(x)}
    content = RecordDict(
        {"arrays": ArrayRecord(model.get_weights()), "metrics": MetricRecord(metrics)}
    )
    return Message(content=content, reply_to=msg)


@client.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    model = _model_for(context, msg)
    _, _, x, y = load_data(
        str(context.run_config["data-path"]), context.node_config["partition-id"]
    )
    loss, accuracy = model.evaluate(x, y, verbose=0)
    metrics = {"eval_loss": float(loss), "eval_acc": float(accuracy), "num-examples": len(x)}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    started = time.perf_counter()
    meta = _meta(str(cfg["data-path"]))
    with np.load(str(cfg["data-path"])) as data:
        initial = [data[f"w_{i}"] for i in range(meta["num_weights"])]
    nodes = len(meta["regions"])
    per_round = int(cfg["per-round"])
    strategy = FedAvg(
        fraction_train=per_round / nodes,
        min_train_nodes=per_round,
        fraction_evaluate=1.0,
        min_evaluate_nodes=nodes,
        min_available_nodes=nodes,
    )
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=int(cfg["num-server-rounds"])
    )
    evaluated = result.evaluate_metrics_clientapp
    last = max(evaluated) if evaluated else None
    out = {
        "system": "flower",
        "rounds": last,
        "accuracy": float(evaluated[last]["eval_acc"]) if last is not None else None,
        "run_s": round(time.perf_counter() - started, 2),
    }
    Path(str(cfg["result-path"])).write_text(json.dumps(out), encoding="utf-8")
