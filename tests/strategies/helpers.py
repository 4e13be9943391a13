"""What the strategy tests share: a Grid that only lists nodes, array records, three
small regions' rows, and SGD steps taken by hand (the golden client tests)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord
from flwr.serverapp import Grid


class NodesOnlyGrid(Grid):
    """Implements only Grid.get_node_ids: sampling is all the strategies ask of it."""

    def __init__(self, node_ids):
        self.node_ids = list(node_ids)

    def get_node_ids(self):
        return list(self.node_ids)

    def set_run(self, run):
        raise NotImplementedError

    @property
    def run(self):
        raise NotImplementedError

    def create_message(self, *args, **kwargs):
        raise NotImplementedError

    def push_messages(self, messages):
        raise NotImplementedError

    def pull_messages(self, message_ids):
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):
        raise NotImplementedError


class RegionGrid(NodesOnlyGrid):
    """Also names each node's region (``r<node>``), as the server's Grid does."""

    def region_of(self, node):
        return f"r{node}"


def f32(*values):
    return np.array(values, dtype=np.float32)


def to_record(arrays):
    return ArrayRecord({name: Array(np.asarray(v)) for name, v in arrays.items()})


def numpy(record):
    return {name: array.numpy() for name, array in record.items()}


def write_three_regions(path: Path) -> Path:
    """Rows of regions r0, r1, r2 (30, 45, 21 rows): y linear in a, b, c plus the region's
    index and noise; written as CSV to ``path``."""
    import pandas as pd

    rng = np.random.default_rng(0)
    frames = []
    for i, n in enumerate((30, 45, 21)):
        x = rng.normal(size=(n, 3))
        y = x @ np.array([1.5, -2.0, 0.5]) + i + 0.1 * rng.normal(size=n)
        frames.append(
            pd.DataFrame({"r": f"r{i}", "a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "y": y})
        )
    pd.concat(frames).to_csv(path, index=False)
    return path


def sgd_by_hand(model, start, arrays, *, steps: int, lr: float, extra: Callable) -> dict:
    """``steps`` full-batch SGD steps of ``model`` (a Keras regression model) from the
    weights ``start`` on a region's training ``arrays`` (mean squared error), each
    gradient plus ``extra(variable)``; returns the trained trainable variables by path."""
    import tensorflow as tf

    model.set_weights([start[v.path] for v in model.weights])
    x = tf.constant(arrays.x_train)
    y = tf.constant(arrays.y_train.reshape(-1, 1), dtype=tf.float32)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        grads = tape.gradient(loss, model.trainable_variables)
        for v, g in zip(model.trainable_variables, grads, strict=True):
            v.assign(v - lr * (g + extra(v)))
    return {v.path: v.numpy() for v in model.trainable_variables}
