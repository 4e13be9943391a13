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
ServerApp runs Flower's ``FedAvg`` (weighted by ``num-examples``) with federated
evaluation on every node each round (Flower's default ``fraction_evaluate = 1.0``,
as fedglobal's), then writes the last round's pooled accuracy to ``result-path``.

The regions trained in each round are fedglobal's (``cohorts`` in the ``.npz``), so
the work and the accuracy are comparable: the server first asks every node for its
``partition-id`` (one ``query`` message each, Flower's custom-message handler: the
node config is the ClientApp's, not the server's; fedglobal's server likewise asks
every region for its statistics before round 1), then ``SameCohorts.configure_train``
sends round r's train messages to the nodes of cohort r instead of sampling at random.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
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


@client.query()
def query(msg: Message, context: Context) -> Message:
    """Which partition this node holds."""
    partition = int(context.node_config["partition-id"])
    return Message(
        content=RecordDict({"metrics": MetricRecord({"partition-id": partition})}), reply_to=msg
    )


class SameCohorts(FedAvg):
    """Flower's FedAvg, training the given nodes in each round instead of a random sample."""

    def __init__(self, cohorts: list[list[int]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.cohorts = cohorts
        self.trained: dict[int, list[int]] = {}  # round -> nodes whose train reply came back

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> list[Message]:
        config["server-round"] = server_round
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return [
            Message(content=record, dst_node_id=node, message_type=MessageType.TRAIN)
            for node in self.cohorts[server_round - 1]
        ]

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        replies = list(replies)
        self.trained[server_round] = [r.metadata.src_node_id for r in replies if not r.has_error()]
        return super().aggregate_train(server_round, replies)


def partitions(grid: Grid, nodes: int, timeout: float = 600.0) -> dict[int, int]:
    """partition-id -> node id, asked of every node once."""
    deadline = time.monotonic() + timeout
    while len(ids := list(grid.get_node_ids())) < nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(ids)} of {nodes} nodes connected")
        time.sleep(0.5)
    asks = [Message(RecordDict(), dst_node_id=n, message_type=MessageType.QUERY) for n in ids]
    replies = list(grid.send_and_receive(asks, timeout=timeout))
    out = {}
    for reply in replies:
        if reply.has_error():
            raise RuntimeError(f"node {reply.metadata.src_node_id}: {reply.error}")
        out[int(reply.content["metrics"]["partition-id"])] = reply.metadata.src_node_id
    return out


@server.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    started = time.perf_counter()
    meta = _meta(str(cfg["data-path"]))
    with np.load(str(cfg["data-path"])) as data:
        initial = [data[f"w_{i}"] for i in range(meta["num_weights"])]
        cohorts = data["cohorts"].tolist()
    nodes = len(meta["regions"])
    node_of = partitions(grid, nodes)
    partition_of = {node: p for p, node in node_of.items()}
    strategy = SameCohorts(
        [[node_of[p] for p in cohort] for cohort in cohorts],
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
        "cohorts_match": all(
            sorted(partition_of[n] for n in strategy.trained.get(r + 1, [])) == sorted(cohort)
            for r, cohort in enumerate(cohorts)
        ),
        "accuracy": float(evaluated[last]["eval_acc"]) if last is not None else None,
        "run_s": round(time.perf_counter() - started, 2),
    }
    Path(str(cfg["result-path"])).write_text(json.dumps(out), encoding="utf-8")
