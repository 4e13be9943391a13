"""Compiled models, built once per process and reused across rounds and regions.

Building a Keras model retraces every ``tf.function``; measured here that made
the same run 3-8x slower (DESIGN.md, decision 5). So a client process keeps one
compiled model per (model, client settings, schema) and, each round, sets the
weights and restores the optimizer's initial state instead of rebuilding.

The compiled model is a :class:`ProximalModel`: it wraps the zoo's model and adds
FedProx's proximal term (Li et al. 2020) to the training loss inside Keras's own
train step. ``mu`` and the round's global weights live in non-trainable
variables set each round, so FedProx needs no rebuild either, and with ``mu = 0``
the term is skipped by a graph conditional: training is exactly FedAvg's.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from fedglobal.config import ClientConfig, ModelConfig
from fedglobal.data import Schema
from fedglobal.models import build_model

_MAX_CACHED = 8

#: Optimizer steps Keras runs per call of its compiled train function. Measured
#: here (logistic model, batch 10): 1.0 ms per step at 1, 0.37 ms at 16; XLA
#: (``jit_compile``) was slower for these small steps. Same maths either way.
#: Under a ``tf.distribute`` strategy other than the default, Keras's multi-step
#: function fails on a partial last batch, so those run one step per call. So
#: do clients with ``[client] callbacks``: Keras calls batch hooks
#: (``on_train_batch_end``...) once per call, and a callback should see every step.
STEPS_PER_EXECUTION = 32


def steps_per_execution(client: ClientConfig) -> int:
    """Optimizer steps per call of the compiled train function (see STEPS_PER_EXECUTION)."""
    if client.distribute != "default" or client.callbacks:
        return 1
    return STEPS_PER_EXECUTION


class _Anchor:
    """FedProx's ``mu`` and ``w_global``, SCAFFOLD's correction: variables kept out of
    Keras's tracking.

    Held in a plain object so they are not weights of the model: they never
    travel, are never averaged, and ``model.weights`` stays the zoo model's.
    """

    def __init__(self, variables: list[keras.Variable]) -> None:
        self.mu = keras.Variable(0.0, dtype="float32", trainable=False, name="proximal_mu")
        self.weights = [
            keras.Variable(
                np.zeros(v.shape, v.dtype), dtype=v.dtype, trainable=False, name="proximal_anchor"
            )
            for v in variables
        ]
        self.corrected = keras.Variable(0.0, dtype="float32", trainable=False, name="corrected")
        self.correction = [
            keras.Variable(
                np.zeros(v.shape, v.dtype), dtype=v.dtype, trainable=False, name="correction"
            )
            for v in variables
        ]


class ProximalModel(keras.Model):
    """A built Keras model whose training loss gains ``mu/2 * ||w - w_global||^2``.

    FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks"):
    ``w`` are the trainable variables, ``w_global`` their values when the round
    started (:meth:`set_proximal`). The term is added in :meth:`compute_loss`,
    which Keras's train step calls inside its gradient tape, so the optimizer
    sees ``grad F_k(w) + mu * (w - w_global)``. It is scaled by 1/replicas like
    Keras's compiled loss, so ``tf.distribute`` sums it once. When ``mu == 0`` a
    graph conditional skips it and adds an exact zero.

    Args:
        inner: the built model (its variables, names and paths are unchanged).
    """

    def __init__(self, inner: keras.Model) -> None:
        super().__init__(name=inner.name)
        self.inner = inner
        self._anchor = _Anchor(list(inner.trainable_variables))
        self.built = True

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self.inner(inputs, training=training)

    @property
    def proximal_mu(self) -> float:
        """The current ``mu``."""
        return float(self._anchor.mu.numpy())

    def set_proximal(self, mu: float) -> None:
        """Set ``mu`` and, if it is positive, take ``w_global`` from the current weights."""
        if not (mu >= 0 and np.isfinite(mu)):
            raise ValueError(f"proximal mu must be a finite number >= 0, got {mu!r}")
        self._anchor.mu.assign(float(mu))
        if mu > 0:
            for anchor, var in zip(
                self._anchor.weights, self.inner.trainable_variables, strict=True
            ):
                anchor.assign(var.value)

    def set_correction(self, correction: dict[str, np.ndarray] | None) -> None:
        """SCAFFOLD's gradient correction ``c - c_i`` by trainable variable path, or None.

        Karimireddy et al. 2020: each local step follows ``g(w) - c_i + c``. The
        loss gains ``sum <w, c - c_i>`` (its gradient is the correction). None
        turns it off (a graph conditional then adds an exact zero).
        """
        if correction is None:
            self._anchor.corrected.assign(0.0)
            return
        for target, var in zip(
            self._anchor.correction, self.inner.trainable_variables, strict=True
        ):
            target.assign(np.asarray(correction[var.path], dtype=var.dtype))
        self._anchor.corrected.assign(1.0)

    def _extra_terms(self) -> Any:
        """FedProx's ``mu/2 ||w - w_global||^2`` plus SCAFFOLD's ``sum <w, c - c_i>``.

        One graph conditional for both (one per step costs about 0.1 ms on CPU,
        measured): when neither is on, it adds an exact zero; when one is on, the
        other's factor (``mu`` or ``corrected``) is 0 and adds an exact zero.
        """
        mu, corrected = self._anchor.mu, self._anchor.corrected
        variables = self.inner.trainable_variables

        def term() -> Any:
            squares = [
                keras.ops.sum(
                    keras.ops.square(keras.ops.cast(w, "float32") - keras.ops.cast(g, "float32"))
                )
                for w, g in zip(variables, self._anchor.weights, strict=True)
            ]
            products = [
                keras.ops.sum(
                    keras.ops.cast(w, "float32")
                    * keras.ops.stop_gradient(keras.ops.cast(c, "float32"))
                )
                for w, c in zip(variables, self._anchor.correction, strict=True)
            ]
            total = 0.5 * mu * keras.ops.sum(keras.ops.stack(squares))
            total = total + corrected * keras.ops.sum(keras.ops.stack(products))
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            return total / replicas if replicas > 1 else total

        active = keras.ops.logical_or(mu > 0.0, corrected > 0.0)
        return keras.ops.cond(active, term, lambda: keras.ops.zeros((), "float32"))

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Any = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """Keras's loss, plus the proximal and correction terms when training."""
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if not training or not self.inner.trainable_variables:
            return loss
        return loss + keras.ops.cast(self._extra_terms(), loss.dtype)


@dataclass
class CompiledModel:
    """A compiled model, its distribution strategy and its optimizer's initial state."""

    model: ProximalModel
    strategy: tf.distribute.Strategy
    optimizer_initial: list[np.ndarray]
    names: list[str]
    #: cohort trainers (clients.cohort) by (batch size, proximal), or why not
    cohort: dict = field(default_factory=dict)
    _predict: Any = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Model outputs for a batch ``x`` (inference mode), from a traced function.

        Traced once for any number of rows: an eager Keras call per region and
        round cost more than the whole evaluation (measured: 20 of 58 s).
        """
        if self._predict is None:
            inner = self.model.inner
            spec = [tf.TensorSpec([None, *x.shape[1:]], tf.float32)]
            self._predict = tf.function(
                lambda rows: inner(rows, training=False), input_signature=spec
            )
        with self.strategy.scope():
            return np.asarray(self._predict(tf.convert_to_tensor(x, tf.float32)))

    def reset_optimizer(self) -> None:
        """Put every optimizer variable (moments, step count...) back to its start."""
        for var, value in zip(self.model.optimizer.variables, self.optimizer_initial, strict=True):
            var.assign(value)

    def set_proximal(self, mu: float) -> None:
        """FedProx's ``mu`` for this round; ``w_global`` is taken from the current weights."""
        with self.strategy.scope():
            self.model.set_proximal(mu)

    def set_correction(self, correction: dict[str, np.ndarray] | None) -> None:
        """SCAFFOLD's ``c - c_i`` for this round (None: none); see ProximalModel."""
        with self.strategy.scope():
            self.model.set_correction(correction)

    def reseed(self, seed: int) -> None:
        """Restart the layers' own random streams (dropout masks...) from ``seed``.

        Keras layers such as Dropout keep a SeedGenerator whose state advances on
        every call and is not reset by ``keras.utils.set_random_seed``; without
        this, a round's dropout masks would depend on everything the process ran
        before (DESIGN decision 8).
        """
        states = self.seed_states(seed)
        for var in self.model.variables:
            if id(var) in states:
                var.assign(states[id(var)])

    def seed_states(self, seed: int) -> dict[int, np.ndarray]:
        """``{id(variable): value}`` of every seed-generator state for ``seed``."""
        states = [v for v in self.model.variables if v.path.endswith("seed_generator_state")]
        if not states:
            return {}
        draws = np.random.default_rng([seed, 0x5EED]).integers(1, 2**31 - 1, size=len(states))
        return {
            id(var): np.array([value, 0], dtype=var.dtype)
            for var, value in zip(states, draws.tolist(), strict=True)
        }


# -- dropout masks from a counter-based hash ----------------------------------------------

_M32 = 0xFFFFFFFF


def _mul32(x: tf.Tensor, k: int) -> tf.Tensor:
    """``(x * k) mod 2**32`` for ``0 <= x < 2**32`` in int64, without overflow."""
    hi = tf.bitwise.right_shift(x, 16)
    lo = tf.bitwise.bitwise_and(x, 0xFFFF)
    return tf.bitwise.bitwise_and(tf.bitwise.left_shift((hi * k) & 0xFFFF, 16) + lo * k, _M32)


def _fmix32(x: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finaliser (Appleby 2011): every input bit moves every output bit."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))
    x = _mul32(x, 0x85EBCA6B)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13))
    x = _mul32(x, 0xC2B2AE35)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def counter_uniform(seed: Any, shape: Any) -> tf.Tensor:
    """Uniform floats in [0, 1) of ``shape``: a hash of ``(seed[0], seed[1], position)``.

    A counter-based generator (Salmon et al. 2011, "Parallel random numbers: as
    easy as 1, 2, 3"), built from integer operations only, so that
    ``tf.vectorized_map`` vectorises it across regions (TensorFlow's stateless
    random ops run as a loop there) and it draws the same numbers in Keras
    ``fit``, in a TensorFlow graph and under XLA.
    """
    seed = tf.bitwise.bitwise_and(tf.cast(seed, tf.int64), _M32)
    count = tf.range(tf.reduce_prod(tf.cast(shape, tf.int64)), dtype=tf.int64)
    x = _fmix32(tf.bitwise.bitwise_xor(count, _fmix32(seed[0] + 0x9E3779B9)))
    x = _fmix32(tf.bitwise.bitwise_xor(x, _fmix32(seed[1] + 0x7F4A7C15)))
    bits = tf.bitwise.right_shift(x, 8)  # 24 bits: exact in float32
    return tf.reshape(tf.cast(bits, tf.float32) * (1.0 / (1 << 24)), shape)


def _counter_dropout(layer: keras.layers.Dropout) -> Any:
    """``layer.call`` with masks from :func:`counter_uniform` and the layer's own seed stream."""

    def call(inputs: Any, training: bool = False) -> Any:
        if not training or layer.rate <= 0:
            return inputs
        shape = tf.shape(inputs)
        if layer.noise_shape is not None:
            shape = tf.stack(
                [s if s is not None else shape[i] for i, s in enumerate(layer.noise_shape)]
            )
        keep = counter_uniform(layer.seed_generator.next(), shape) >= layer.rate
        scale = tf.cast(1.0 / (1.0 - layer.rate), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))

    return call


def use_counter_dropout(model: keras.Model) -> None:
    """Give every ``Dropout`` of ``model`` masks from :func:`counter_uniform`.

    Keras's own masks come from TensorFlow's stateless random ops, which draw
    other numbers under XLA than without it and do not vectorise across
    regions. With this, Keras ``fit`` and cohort training draw the same masks
    (so their results agree to float rounding, as for every other layer) and
    the cohort program stays vectorised. The masks still come from the layer's
    seed stream, restarted from ``(seed, round, region)`` by :meth:`CompiledModel.reseed`.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if type(layer) is keras.layers.Dropout:
            object.__setattr__(layer, "call", _counter_dropout(layer))


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
        "steps_per_execution": steps_per_execution(client),
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
        inner = build_model(model_cfg, schema)
        use_counter_dropout(inner)
        model = ProximalModel(inner)
        loss = "sparse_categorical_crossentropy" if schema.task == "classification" else "mse"
        model.compile(
            optimizer=make_optimizer(client),
            loss=loss,
            steps_per_execution=steps_per_execution(client),
        )
        model.optimizer.build(model.trainable_variables)
    names = [v.path for v in model.weights]
    if names != [v.path for v in inner.weights]:  # the wrapper adds no weight
        raise RuntimeError(f"ProximalModel changed the model's variables: {names[:5]}")
    entry = CompiledModel(
        model=model,
        strategy=strategy,
        optimizer_initial=[np.array(v.numpy()) for v in model.optimizer.variables],
        names=names,
    )
    _CACHE[key] = entry
    while len(_CACHE) > _MAX_CACHED:
        _CACHE.popitem(last=False)
    return entry
