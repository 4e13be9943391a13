"""Compiled models, built once per process and reused across rounds and regions.

Building a Keras model retraces every ``tf.function``; measured here that made
the same run 3-8x slower (DESIGN.md, decision 5). So a client process keeps one
compiled model per (model, client settings, schema) and, each round, sets the
weights and restores the optimizer's initial state instead of rebuilding.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fedglobal.config import ClientConfig, ModelConfig
from fedglobal.data import Schema
from fedglobal.models import build_model

_MAX_CACHED = 8


@dataclass
class CompiledModel:
    """A compiled model, its distribution strategy and its optimizer's initial state."""

    model: keras.Model
    strategy: tf.distribute.Strategy
    optimizer_initial: list[np.ndarray]
    names: list[str]

    def reset_optimizer(self) -> None:
        """Put every optimizer variable (moments, step count...) back to its start."""
        for var, value in zip(self.model.optimizer.variables, self.optimizer_initial, strict=True):
            var.assign(value)


_CACHE: OrderedDict[str, CompiledModel] = OrderedDict()


def distribution_strategy(client: ClientConfig) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named in ``client.distribute``."""
    if client.distribute == "mirrored":
        # One replica per accelerator, or per logical CPU device when there is none.
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if client.distribute == "one_device":
        return tf.distribute.OneDeviceStrategy(client.device)
    return tf.distribute.get_strategy()


def make_optimizer(client: ClientConfig) -> keras.optimizers.Optimizer:
    """The client optimizer from ``[client]`` (name, learning rate, accumulation)."""
    kwargs: dict[str, Any] = {"learning_rate": client.learning_rate}
    if client.gradient_accumulation_steps:
        kwargs["gradient_accumulation_steps"] = client.gradient_accumulation_steps
    if client.optimizer == "sgd":
        kwargs["momentum"] = client.momentum
    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
        "adagrad": keras.optimizers.Adagrad,
    }
    return classes[client.optimizer](**kwargs)


def _key(model_cfg: ModelConfig, client: ClientConfig, schema: Schema) -> str:
    relevant = {
        "model": asdict(model_cfg),
        "optimizer": [
            client.optimizer,
            client.learning_rate,
            client.momentum,
            client.gradient_accumulation_steps,
        ],
        "distribute": [client.distribute, client.device],
        "schema": schema.to_json(),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def compiled_model(model_cfg: ModelConfig, client: ClientConfig, schema: Schema) -> CompiledModel:
    """The process's compiled model for these settings, built on first use."""
    key = _key(model_cfg, client, schema)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    strategy = distribution_strategy(client)
    with strategy.scope():
        model = build_model(model_cfg, schema)
        loss = "sparse_categorical_crossentropy" if schema.task == "classification" else "mse"
        model.compile(optimizer=make_optimizer(client), loss=loss)
        model.optimizer.build(model.trainable_variables)
    entry = CompiledModel(
        model=model,
        strategy=strategy,
        optimizer_initial=[np.array(v.numpy()) for v in model.optimizer.variables],
        names=[v.path for v in model.weights],
    )
    _CACHE[key] = entry
    while len(_CACHE) > _MAX_CACHED:
        _CACHE.popitem(last=False)
    return entry
