"""Cohort training: a round's regions train together, in one compiled XLA program.

The in-process engine's Grid sees every train message of a round at once. With
``[client] cohort = true`` (or ``"auto"``) it hands them to
:func:`train_cohort` (component ``clients.cohort:train_cohort``), which replies
exactly as the per-message ``train`` handler of :mod:`clients.app` would, only
faster: the regions' weights, optimizer states and data are stacked along a
leading *client* axis, and one ``tf.function(jit_compile=True)`` runs every
local step of every region:

- a ``tf.while_loop`` over steps; at each step, each region's batch is gathered
  from its own rows in the order of its :class:`~clients.regional.TrainPlan`;
- inside, ``tf.vectorized_map`` over the regions of
  ``keras.Model.stateless_call`` (forward pass with the region's weights and
  non-trainable state), the masked loss, its gradient, and the optimizer's
  update, written out here for SGD (with momentum and Nesterov), Adam, AdamW,
  RMSprop and Adagrad with the same operations as Keras's ``update_step``;
  FedProx's proximal term and SCAFFOLD's gradient correction (:mod:`clients.scaffold`)
  are added to the loss as in Keras ``fit``;
- ragged regions: every region's rows are padded to a common length; a step's
  rows past the region's end (its epoch's last, partial batch) are masked out
  of the loss and, for ``BatchNormalization``, out of the batch statistics; a
  region that has done all its steps keeps its state (a masked update).

With the same seed the result equals the sequential path's (Keras ``fit``) to
float rounding: the same batches in the same order, the same loss and the same
optimizer maths (tests/speed/test_speed_cohort.py checks 1e-5 for dense, conv,
BatchNorm, Embedding and recurrent layers, with SGD and Adam).

The program comes in three kinds (:func:`modes`, chosen by measurement): vectorised
across regions under XLA (dense, embedding, recurrent models); the same as a
TensorFlow graph without XLA for convolutional models, whose per-region kernels
then run as TensorFlow's own (oneDNN) convolutions, faster on CPU than any XLA
form measured; and a loop over regions inside the XLA program for models whose
operations do not vectorise.

What cannot train in a cohort falls back to the sequential path, with a log line:
a ``tf.distribute`` strategy other than the default, an optimizer or option not
written out here (gradient accumulation, clipping, EMA, learning-rate
schedules, AMSGrad...), a model that does not compile under XLA, an active
attack plan (:mod:`clients.attacks`), Keras callbacks (``[client] callbacks``)
or a message the per-message handler would treat differently. The reply says
which path trained (``meta`` ``trained-by``, :mod:`clients.paths`), and the
server records it per round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from flwr.app import Context, Message, MessageType
from flwr.client.mod.utils import make_ffn

from clients import ditto, node, paths, scaffold
from clients.models import CompiledModel
from clients.regional import FitResult, RegionalClient, TrainPlan
from fedglobal.protocol import SERVER_ROUND_KEY
from fedglobal.runtime import compile_cache
from strategies.client_metrics import START_LOSS

log = logging.getLogger(__name__)

__all__ = [
    "CohortJob",
    "CohortTrainer",
    "Unsupported",
    "evaluate_cohort",
    "run_cohort",
    "train_cohort",
    "trainer_for",
]

#: Rows per region are padded to a power of two at least this large, so that a
#: run compiles a handful of shapes, not one per round.
MIN_ROWS = 16


class Unsupported(Exception):
    """This model, optimizer or message cannot train in a cohort (the reason)."""


@dataclass(frozen=True)
class CohortJob:
    """One region's local training: its client, start weights, plan, FedProx ``mu``, reports."""

    client: RegionalClient
    weights: Mapping[str, np.ndarray]
    plan: TrainPlan
    proximal_mu: float = 0.0
    #: SCAFFOLD's ``c - c_i`` by trainable variable (clients.scaffold), or None
    correction: Mapping[str, np.ndarray] | None = None
    #: extra metrics the strategy asks for (strategies.client_metrics)
    report: tuple[str, ...] = ()
    #: the proximal term's ``w_global`` if not ``weights`` (Ditto's personal model)
    anchor: Mapping[str, np.ndarray] | None = None


# -- optimizer maths ------------------------------------------------------------------

_SLOTS: dict[str, tuple[str, ...]] = {
    "SGD": ("momentums",),
    "Adam": ("_momentums", "_velocities"),
    "AdamW": ("_momentums", "_velocities"),
    "RMSprop": ("_velocities", "_momentums", "_average_gradients"),
    "Adagrad": ("_accumulators",),
}


class _OptimizerMath:
    """Keras's ``update_step`` of one optimizer, as a pure function of tensors.

    The state of one region is a list (one entry per slot kind) of lists (one
    tensor per trainable variable). The operations and their order follow
    ``keras/src/optimizers/<name>.py`` so that results agree to rounding.
    """

    def __init__(self, optimizer: keras.optimizers.Optimizer, variables: list, initial: dict):
        kind = type(optimizer).__name__
        if kind not in _SLOTS:
            raise Unsupported(f"optimizer {kind} is not written out for cohorts")
        for option in ("clipnorm", "clipvalue", "global_clipnorm", "loss_scale_factor"):
            if getattr(optimizer, option, None) is not None:
                raise Unsupported(f"optimizer option {option}")
        if optimizer.use_ema:
            raise Unsupported("optimizer option use_ema")
        if getattr(optimizer, "amsgrad", False):
            raise Unsupported("AMSGrad")
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            raise Unsupported("a learning-rate schedule")
        if getattr(optimizer, "centered", False):
            raise Unsupported("centered RMSprop")
        self.kind = kind
        self.opt = optimizer
        #: Keras's gradient accumulation: an update every ``accumulate`` steps, with the
        #: mean of their gradients; the steps between only add to the accumulators.
        self.accumulate = int(optimizer.gradient_accumulation_steps or 0)
        self.lr = float(np.asarray(optimizer.learning_rate))
        wd = optimizer.weight_decay
        self.decay = [wd is not None and optimizer._use_weight_decay(v) for v in variables]
        self.wd = None if wd is None else float(wd)
        # slot kinds actually present (SGD without momentum has none, ...)
        self.slot_names: list[str] = []
        self.initial: list[list[np.ndarray]] = []
        names = _SLOTS[kind] + (("_accumulated_gradients",) if self.accumulate else ())
        for name in names:
            slots = getattr(optimizer, name, None)
            if not slots:
                continue
            self.slot_names.append(name)
            self.initial.append([initial[id(slots[i])] for i in range(len(variables))])

    def update(self, ws: list, slots: list[list], grads: list, step: tf.Tensor) -> tuple:
        """New weights and slots after one step; ``step`` counts steps already done.

        With gradient accumulation (``keras/src/optimizers/base_optimizer.py``,
        ``apply``): on every ``accumulate``-th step the update uses
        ``(g + accumulated) / accumulate`` and the optimizer's own step count
        ``step // accumulate``, and the accumulators restart from zero; on the other
        steps only the accumulators change. Both branches are computed and one is
        selected (``tf.where``), so the program still vectorises across regions.
        """
        if not self.accumulate:
            return self._step(ws, slots, grads, step)
        n = self.accumulate
        acc_index = self.slot_names.index("_accumulated_gradients")
        acc = slots[acc_index]
        others = [kind for j, kind in enumerate(slots) if j != acc_index]
        mean = [
            (tf.cast(g, a.dtype) + a) / tf.constant(n, a.dtype)
            for g, a in zip(grads, acc, strict=True)
        ]
        stepped_ws, stepped = self._step(ws, others, mean, step // n, skip=acc_index)
        is_update = tf.equal((step + 1) % n, 0)
        new_ws = [tf.where(is_update, a, b) for a, b in zip(stepped_ws, ws, strict=True)]
        new_slots = [
            [tf.where(is_update, a, b) for a, b in zip(new, old, strict=True)]
            for new, old in zip(stepped, others, strict=True)
        ]
        new_acc = [
            tf.where(is_update, tf.zeros_like(a), a + tf.cast(g, a.dtype))
            for g, a in zip(grads, acc, strict=True)
        ]
        new_slots.insert(acc_index, new_acc)
        return new_ws, new_slots

    def _step(
        self, ws: list, slots: list[list], grads: list, step: tf.Tensor, skip: int = -1
    ) -> tuple:
        """One optimizer update (``slots``: the slot kinds but the ``skip``-th)."""
        o = self.opt
        names = [name for j, name in enumerate(self.slot_names) if j != skip]
        lr = tf.constant(self.lr, tf.float32)
        slot = {name: list(values) for name, values in zip(names, slots, strict=True)}
        new_ws = []
        for i, (w, g) in enumerate(zip(ws, grads, strict=True)):
            g = tf.cast(g, w.dtype)
            if self.decay[i]:  # Adam family: decoupled weight decay before the step
                w = w - w * tf.constant(self.wd, w.dtype) * lr
            if self.kind == "SGD":
                if "momentums" in slot:
                    m = slot["momentums"][i]
                    mom = tf.constant(o.momentum, w.dtype)
                    m = m * mom - g * lr
                    slot["momentums"][i] = m
                    w = w + (m * mom - g * lr) if o.nesterov else w + m
                else:
                    w = w - g * lr
            elif self.kind in ("Adam", "AdamW"):
                local_step = tf.cast(step + 1, w.dtype)
                b1p = tf.pow(tf.constant(o.beta_1, w.dtype), local_step)
                b2p = tf.pow(tf.constant(o.beta_2, w.dtype), local_step)
                m, v = slot["_momentums"][i], slot["_velocities"][i]
                alpha = lr * tf.sqrt(1 - b2p) / (1 - b1p)
                m = m + (g - m) * (1 - o.beta_1)
                v = v + (tf.square(g) - v) * (1 - o.beta_2)
                slot["_momentums"][i], slot["_velocities"][i] = m, v
                w = w - (m * alpha) / (tf.sqrt(v) + o.epsilon)
            elif self.kind == "RMSprop":
                vel = slot["_velocities"][i]
                vel = o.rho * vel + (1 - o.rho) * tf.square(g)
                slot["_velocities"][i] = vel
                increment = (lr * g) / tf.sqrt(vel + o.epsilon)
                if "_momentums" in slot:
                    mom = o.momentum * slot["_momentums"][i] + increment
                    slot["_momentums"][i] = mom
                    w = w - mom
                else:
                    w = w - increment
            else:  # Adagrad
                acc = slot["_accumulators"][i] + tf.square(g)
                slot["_accumulators"][i] = acc
                w = w - (lr * g) / tf.sqrt(acc + o.epsilon)
            new_ws.append(w)
        return new_ws, [slot[name] for name in names]


# -- BatchNormalization over the valid rows of a batch ---------------------------------

_MASK = threading.local()


@contextlib.contextmanager
def _row_mask(mask: tf.Tensor) -> Iterator[None]:
    _MASK.value = mask
    try:
        yield
    finally:
        _MASK.value = None


def _masked_bn_call(layer: keras.layers.BatchNormalization, original: Callable) -> Callable:
    def call(inputs: Any, training: Any = None, mask: Any = None) -> Any:
        rows = getattr(_MASK, "value", None)
        if rows is not None and mask is None and training:
            shape = tf.shape(inputs)[:-1]
            rank = len(inputs.shape) - 1
            mask = tf.broadcast_to(tf.reshape(rows > 0, [-1] + [1] * (rank - 1)), shape)
        return original(inputs, training=training, mask=mask)

    return call


@contextlib.contextmanager
def _tracing_patches(model: keras.Model) -> Iterator[None]:
    """While tracing: BatchNorm statistics over valid rows only; recurrent layers unrolled."""
    patched: list[tuple[Any, str, Any, bool]] = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            had = "call" in layer.__dict__
            patched.append((layer, "call", layer.__dict__.get("call"), had))
            object.__setattr__(layer, "call", _masked_bn_call(layer, layer.call))
        if isinstance(layer, keras.layers.RNN) and not layer.unroll:
            patched.append((layer, "unroll", False, True))
            object.__setattr__(layer, "unroll", True)  # no TensorList: XLA compiles it
    try:
        yield
    finally:
        for layer, name, value, had in reversed(patched):
            if had:
                object.__setattr__(layer, name, value)
            else:
                object.__delattr__(layer, name)


# -- the compiled cohort program --------------------------------------------------------


def _per_sample_loss(model: keras.Model) -> keras.losses.Loss:
    name = model.loss
    if name == "sparse_categorical_crossentropy":
        return keras.losses.SparseCategoricalCrossentropy(reduction=None)
    if name == "mse":
        return keras.losses.MeanSquaredError(reduction=None)
    raise Unsupported(f"loss {name!r}")


#: Program kinds: every step of every region vectorised across regions in one
#: XLA program (``tf.vectorized_map`` under ``jit_compile``); a TensorFlow graph
#: without XLA that loops over the regions at each step (``tf.map_fn``), running
#: up to ``GRAPH_PARALLEL`` regions' steps at once with TensorFlow's own
#: (oneDNN) kernels; or that loop inside an XLA program. In both loops a region
#: that has done its steps skips the step.
VECTORIZED = "vectorized"
GRAPH = "graph"
PER_REGION = "per_region"
GRAPH_PARALLEL = 8

_CONV = (
    keras.layers.Conv1D,
    keras.layers.Conv2D,
    keras.layers.Conv3D,
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
)


def modes(model: keras.Model) -> tuple[str, ...]:
    """The program kinds to try for ``model``, fastest first (measured on this 2-core CPU).

    Dense, embedding and recurrent models vectorise across regions under XLA:
    many small operations become a few large ones (W1, a logistic model: 0.08 s
    per round vectorised against 0.15 s region by region).

    A convolution whose kernel differs per region has no vectorisation rule in
    TensorFlow, and XLA's CPU convolutions are slow next to TensorFlow's oneDNN
    kernels. One round of the Fashion-MNIST CNN (8 and 16 filters, 10 Dirichlet
    regions, 118 region-steps of 32 rows), side by side in one process on a
    loaded machine: Keras ``fit`` region by region 1.19-1.32 s; in XLA,
    convolutions rewritten as im2col (strided slices and one batched matmul;
    Chellapilla et al. 2006) 1.46-3.6 s region by region and 3.2-3.9 s
    vectorised; XLA's own convolution region by region 5.5-7.0 s; in a
    prototype step (10 regions, 32 and 64 filters) one grouped convolution
    (``feature_group_count``) took 11.3 s against 3.5 s for XLA's loop over
    regions and 0.8 s for im2col; without XLA,
    ``vectorized_map`` (its loop fallback for the convolutions) 1.0-2.0 s after
    a 13 s trace, and the graph's loop over regions 0.48-0.89 s after a 3 s
    trace (0.9-1.0 s one region at a time). So convolutional models take the
    graph's loop. A model whose operations do not vectorise under XLA falls back
    to the loop over regions in XLA.
    """
    layers = model._flatten_layers(include_self=False, recursive=True)
    if any(isinstance(layer, _CONV) for layer in layers):
        return (GRAPH,)
    return (VECTORIZED, PER_REGION)


def _when_active(step_fn: Callable, args: tuple) -> tuple:
    """``step_fn(args)`` for a region still training; its state unchanged otherwise."""
    *inputs, active = args
    inputs = tuple(inputs)
    tv, ntv, slots = inputs[0], inputs[1], inputs[2]
    return tf.cond(
        active,
        lambda: step_fn(inputs),
        lambda: (list(tv), list(ntv), [list(s) for s in slots], tf.zeros([], tf.float32)),
    )


class CohortTrainer:
    """Trains many regions of one compiled model together (see the module docstring).

    Args:
        compiled: the process's compiled model (:func:`clients.models.compiled_model`).
        batch_size: rows per step.
        proximal: whether any region has FedProx ``mu > 0`` (adds the term).
        corrected: whether the regions follow SCAFFOLD's corrected gradients
            (Karimireddy et al. 2020): each step's gradient gains the region's
            ``c - c_i``, as the loss term ``sum <w, c - c_i>`` of Keras ``fit``.
    """

    def __init__(
        self, compiled: CompiledModel, batch_size: int, proximal: bool, corrected: bool = False
    ) -> None:
        model = compiled.model
        if compiled.strategy is not tf.distribute.get_strategy():
            raise Unsupported(f"tf.distribute strategy {type(compiled.strategy).__name__}")
        self.compiled = compiled
        self.inner: keras.Model = model.inner
        self.batch_size = int(batch_size)
        self.proximal = bool(proximal)
        self.corrected = bool(corrected)
        self.loss = _per_sample_loss(model)
        self.tv = list(self.inner.trainable_variables)
        self.ntv = list(self.inner.non_trainable_variables)
        initial = {
            id(v): value
            for v, value in zip(model.optimizer.variables, compiled.optimizer_initial, strict=True)
        }
        self.opt = _OptimizerMath(model.optimizer, self.tv, initial)
        self.names = list(compiled.names)
        by_path = {v.path: v for v in self.inner.weights}
        missing = [n for n in self.names if n not in by_path]
        if missing:
            raise Unsupported(f"variables outside the model: {missing[:3]}")
        self._tv_index = {v.path: i for i, v in enumerate(self.tv)}
        self._ntv_index = {v.path: i for i, v in enumerate(self.ntv)}
        self._seed_states = [
            i for i, v in enumerate(self.ntv) if v.path.endswith("seed_generator_state")
        ]
        self.mode = ""  # VECTORIZED or PER_REGION once compiled (see modes())
        self._fn: Callable | None = None
        self._rows = 0
        self.compiles = 0

    @property
    def vectorized(self) -> bool:
        """Whether the program vectorises across regions (see :func:`modes`)."""
        return self.mode == VECTORIZED

    # ---- the traced function ----
    def _signature(self, x_shape: tuple, y_shape: tuple, y_dtype: tf.DType) -> list:
        def stacked(v: Any) -> tf.TensorSpec:
            return tf.TensorSpec([None, *v.shape], v.dtype)

        return [
            [stacked(v) for v in self.tv],
            [stacked(v) for v in self.ntv],
            [[stacked(v) for v in self.tv] for _ in self.opt.slot_names],
            [stacked(v) for v in self.tv] if self.proximal else [],
            [stacked(v) for v in self.tv] if self.corrected else [],  # SCAFFOLD c - c_i
            tf.TensorSpec([None], tf.float32),  # mu
            tf.TensorSpec([None, None, *x_shape], tf.float32),  # X
            tf.TensorSpec([None, None, *y_shape], y_dtype),  # Y
            tf.TensorSpec([None, None], tf.int32),  # order
            tf.TensorSpec([None], tf.int32),  # rows
            tf.TensorSpec([None], tf.int32),  # steps per epoch (0 = repeat)
            tf.TensorSpec([None], tf.int32),  # steps
            tf.TensorSpec([None], tf.int32),  # loss from
        ]

    def _build(self, x_shape: tuple, y_shape: tuple, y_dtype: tf.DType, mode: str) -> Callable:
        batch = self.batch_size
        opt = self.opt
        inner, loss_fn, proximal, corrected = self.inner, self.loss, self.proximal, self.corrected

        @tf.autograph.experimental.do_not_convert
        def one_client(args: tuple) -> tuple:
            tv, ntv, slots, anchor, corr, mu, xb, yb, rows, step = args
            with tf.GradientTape() as tape:
                tape.watch(tv)
                with _row_mask(rows):
                    y_pred, new_ntv = inner.stateless_call(tv, ntv, xb, training=True)
                per = loss_fn(yb, y_pred)
                loss = tf.reduce_sum(per * rows) / tf.reduce_sum(rows)
                if proximal:
                    squares = [
                        tf.reduce_sum(tf.square(tf.cast(w, tf.float32) - tf.cast(g, tf.float32)))
                        for w, g in zip(tv, anchor, strict=True)
                    ]
                    term = 0.5 * mu * tf.reduce_sum(tf.stack(squares))
                    loss = loss + tf.cast(term, loss.dtype)
                if corrected:
                    products = [
                        tf.reduce_sum(tf.cast(w, tf.float32) * tf.cast(c, tf.float32))
                        for w, c in zip(tv, corr, strict=True)
                    ]
                    loss = loss + tf.cast(tf.reduce_sum(tf.stack(products)), loss.dtype)
            grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, tv)]
            new_tv, new_slots = opt.update(tv, slots, grads, step)
            return new_tv, list(new_ntv), new_slots, loss

        def run(tv, ntv, slots, anchor, corr, mu, x, y, order, rows, per_epoch, steps, loss_from):
            total = tf.reduce_max(steps)
            offsets = tf.range(batch, dtype=tf.int32)[None, :]
            k = tf.shape(rows)[0]

            def select(active: tf.Tensor, new: list, old: list) -> list:
                out = []
                for a, b in zip(new, old, strict=True):
                    shape = tf.concat([[k], tf.ones([tf.rank(b) - 1], tf.int32)], 0)
                    out.append(tf.where(tf.reshape(active, shape), a, b))
                return out

            def body(t, tv, ntv, slots, loss_sum, loss_rows):
                epoch_pos = (t % tf.maximum(per_epoch, 1))[:, None] * batch + offsets
                repeat_pos = (t * batch + offsets) % rows[:, None]
                pos = tf.where((per_epoch == 0)[:, None], repeat_pos, epoch_pos)
                valid = pos < rows[:, None]
                idx = tf.gather(order, tf.minimum(pos, rows[:, None] - 1), batch_dims=1)
                xb = tf.gather(x, idx, batch_dims=1)
                yb = tf.gather(y, idx, batch_dims=1)
                weight = tf.cast(valid, tf.float32)
                step = tf.fill([k], t)
                active = t < steps
                args = (tv, ntv, slots, anchor, corr, mu, xb, yb, weight, step)
                if mode == VECTORIZED:
                    new_tv, new_ntv, new_slots, loss = tf.vectorized_map(
                        one_client, args, fallback_to_while_loop=False
                    )
                else:  # a loop over regions; a region whose steps are done waits
                    new_tv, new_ntv, new_slots, loss = tf.map_fn(
                        functools.partial(_when_active, one_client),
                        (*args, active),
                        fn_output_signature=tf.nest.map_structure(
                            lambda a: tf.TensorSpec(a.shape[1:], a.dtype), (tv, ntv, slots, mu)
                        ),
                        # the graph runs several regions' steps at once (XLA: one by one)
                        parallel_iterations=GRAPH_PARALLEL if mode == GRAPH else 1,
                    )
                tv = select(active, new_tv, tv)
                ntv = select(active, new_ntv, ntv)
                slots = [select(active, n, o) for n, o in zip(new_slots, slots, strict=True)]
                counted = tf.logical_and(active, t >= loss_from)
                batch_rows = tf.reduce_sum(weight, axis=1)
                loss_sum += tf.where(counted, tf.cast(loss, tf.float32) * batch_rows, 0.0)
                loss_rows += tf.where(counted, batch_rows, 0.0)
                return t + 1, tv, ntv, slots, loss_sum, loss_rows

            zeros = tf.zeros([k], tf.float32)
            _, tv, ntv, slots, loss_sum, loss_rows = tf.while_loop(
                lambda t, *_: t < total,
                body,
                (tf.constant(0), tv, ntv, slots, zeros, zeros),
                maximum_iterations=None,
            )
            return tv, ntv, loss_sum / tf.maximum(loss_rows, 1.0)

        signature = self._signature(x_shape, y_shape, y_dtype)
        jit = mode != GRAPH
        return tf.function(run, input_signature=signature, jit_compile=jit, autograph=False)

    # ---- host side ----
    def fit(self, jobs: Sequence[CohortJob]) -> list[FitResult]:
        """Train every job's region; results in the order of ``jobs``."""
        if not jobs:
            return []
        for job in jobs:
            if job.plan.batch_size != self.batch_size:
                raise ValueError("every job of a cohort must use the trainer's batch size")
        inputs = self._inputs(jobs)
        x_shape = tuple(inputs[6].shape[2:])
        y_shape = tuple(inputs[7].shape[2:])
        y_dtype = tf.as_dtype(inputs[7].dtype)
        if self._fn is None:
            self._fn = self._compile(inputs, x_shape, y_shape, y_dtype)
            tv, ntv, losses = self._last
        else:
            with _tracing_patches(self.inner):
                tv, ntv, losses = self._fn(*inputs)
        tv = [np.asarray(t) for t in tv]
        ntv = [np.asarray(t) for t in ntv]
        losses = np.asarray(losses)
        results = []
        for k, job in enumerate(jobs):
            weights = {}
            for name in self.names:
                if name in self._tv_index:
                    weights[name] = tv[self._tv_index[name]][k]
                else:
                    weights[name] = ntv[self._ntv_index[name]][k]
            results.append(
                FitResult(
                    weights=weights,
                    num_examples=len(job.client.arrays.x_train),
                    metrics={"loss": float(losses[k])},
                )
            )
        return results

    def _compile(self, inputs: list, x_shape: tuple, y_shape: tuple, y_dtype: tf.DType):
        """Trace and run once, in the first program kind that compiles (see :func:`modes`)."""
        errors = []
        for mode in modes(self.inner):
            fn = self._build(x_shape, y_shape, y_dtype, mode)
            try:
                started = time.perf_counter()
                with _tracing_patches(self.inner):
                    self._last = fn(*inputs)
                self.compiles += 1
                compile_cache.flags_read()  # compiled: TensorFlow has read TF_XLA_FLAGS
                self.mode = mode
                if errors:
                    log.info(
                        "cohort: model %r trains region by region inside the XLA program "
                        "(not vectorised: %s)",
                        self.inner.name,
                        errors[-1][:200],
                    )
                log.debug(
                    "cohort: %s program compiled in %.2fs", mode, time.perf_counter() - started
                )
                return fn
            except Exception as exc:  # any failure means: cannot vectorise
                errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
                if "No pfor vectorization" not in str(exc) and "loop invariant" not in str(exc):
                    break
        raise Unsupported(f"the model does not compile as a cohort ({errors[-1][:300]})")

    def _inputs(self, jobs: Sequence[CohortJob]) -> list:
        k = len(jobs)
        rows = [len(job.client.arrays.x_train) for job in jobs]
        padded = max(MIN_ROWS, 1 << max(1, math.ceil(math.log2(max(max(rows), 1)))))
        padded = self._rows = max(padded, self._rows)  # never shrink: fewer XLA compiles
        x0 = jobs[0].client.arrays.x_train
        y0 = jobs[0].client.arrays.y_train
        x = np.zeros((k, padded, *x0.shape[1:]), np.float32)
        y = np.zeros((k, padded, *y0.shape[1:]), y0.dtype)
        order = np.zeros((k, padded), np.int32)
        for i, job in enumerate(jobs):
            n = rows[i]
            x[i, :n] = job.client.arrays.x_train
            y[i, :n] = job.client.arrays.y_train
            order[i, :n] = job.plan.order
        tv = [np.stack([np.asarray(job.weights[v.path]) for job in jobs]) for v in self.tv]
        ntv = []
        seeds = [self.compiled.seed_states(job.plan.seed) for job in jobs]
        for i, v in enumerate(self.ntv):
            if v.path in jobs[0].weights:
                ntv.append(np.stack([np.asarray(job.weights[v.path]) for job in jobs]))
            elif i in self._seed_states:
                ntv.append(np.stack([s[id(v)] for s in seeds]))
            else:
                ntv.append(np.broadcast_to(np.asarray(v.numpy()), (k, *v.shape)).copy())
        slots = [
            [np.broadcast_to(value, (k, *value.shape)).copy() for value in kind]
            for kind in self.opt.initial
        ]
        anchor = []
        if self.proximal:
            for v, t in zip(self.tv, tv, strict=True):
                if all(job.anchor is None for job in jobs):
                    anchor.append(t.copy())
                    continue
                anchor.append(
                    np.stack(
                        [np.asarray((job.anchor or job.weights)[v.path], v.dtype) for job in jobs]
                    )
                )
        corr = []
        if self.corrected:
            for v in self.tv:
                corr.append(
                    np.stack(
                        [
                            np.asarray(job.correction[v.path], v.dtype)
                            if job.correction is not None
                            else np.zeros(v.shape, v.dtype)
                            for job in jobs
                        ]
                    )
                )
        mu = np.array([job.proximal_mu for job in jobs], np.float32)
        per_epoch = np.array([job.plan.steps_per_epoch for job in jobs], np.int32)
        steps = np.array([job.plan.steps for job in jobs], np.int32)
        loss_from = np.array([job.plan.loss_from for job in jobs], np.int32)
        y_dtype = np.int32 if y.dtype.kind in "iu" else np.float32
        return [
            tv,
            ntv,
            slots,
            anchor,
            corr,
            mu,
            x,
            y.astype(y_dtype, copy=False),
            order,
            np.asarray(rows, np.int32),
            per_epoch,
            steps,
            loss_from,
        ]


def trainer_for(
    compiled: CompiledModel, batch_size: int, proximal: bool, corrected: bool = False
) -> CohortTrainer:
    """The cohort trainer cached on ``compiled`` (raises :class:`Unsupported`)."""
    cache = compiled.cohort
    key = (int(batch_size), bool(proximal), bool(corrected))
    entry = cache.get(key)
    if isinstance(entry, Unsupported):
        raise entry
    if entry is None:
        try:
            entry = CohortTrainer(compiled, batch_size, proximal, corrected)
        except Unsupported as exc:
            cache[key] = exc
            raise
        cache[key] = entry
    return entry


# -- the batched ClientApp entry point ---------------------------------------------------

_warned: set[str] = set()


def _fallback(reason: str, level: int, messages: Sequence[Message]) -> None:
    """Leave ``messages`` to the per-message handler; log ``reason`` once per process."""
    for message in messages:
        paths.note_fallback(message, reason)
    count = len(messages)
    key = reason
    if key in _warned:
        log.debug("cohort: %d region(s) train one by one: %s", count, reason)
        return
    _warned.add(key)
    log.log(level, "cohort training not used, regions train one by one: %s", reason)


def _personal_models(
    compiled: CompiledModel,
    batch_size: int,
    members: Sequence[tuple[int, CohortJob]],
    messages: Sequence[Message],
    contexts: Sequence[Context],
) -> dict[int, dict[str, np.ndarray]]:
    """Ditto's personal models of the members that train one, as a second cohort.

    Each starts from the region's ``v_k`` and is pulled towards the round's
    global weights (the proximal anchor), with the round's plan, as
    :func:`clients.ditto.train_personal` does with Keras ``fit``.
    """
    jobs: list[tuple[int, CohortJob]] = []
    for i, job in members:
        start = ditto.personal_start(messages[i], contexts[i], dict(job.weights))
        if start is not None:
            personal, lam = start
            jobs.append((i, CohortJob(job.client, personal, job.plan, lam, anchor=job.weights)))
    if not jobs:
        return {}
    trainer = trainer_for(compiled, batch_size, any(j.proximal_mu > 0 for _, j in jobs))
    results = trainer.fit([job for _, job in jobs])
    return {i: result.weights for (i, _), result in zip(jobs, results, strict=True)}


def _with_reports(job: CohortJob, result: FitResult) -> FitResult:
    """``result`` with the extra metrics ``job`` asks for (its region did all its steps)."""
    start = job.client.start_loss(job.weights) if START_LOSS in job.report else None
    extra = job.client.extra_metrics(job.report, start_loss=start, steps=job.plan.steps)
    return dataclasses.replace(result, metrics={**result.metrics, **extra})


def _returning(reply: Message) -> Callable[[Message, Context], Message]:
    return lambda _message, _context: reply


def train_cohort(messages: Sequence[Message], contexts: Sequence[Context]) -> list[Message | None]:
    """Reply to many train messages at once, as :func:`clients.app.train` would to each.

    Returns one entry per message: its reply, or ``None`` where the message must
    go through the per-message handler (the cohort path does not apply; logged).
    """
    from clients import app as client_app
    from clients import attacks

    out: list[Message | None] = [None] * len(messages)
    if attacks.current() is not None:
        _fallback("an attack plan is active (clients.attacks)", logging.INFO, messages)
        return out
    groups: dict[tuple, list[tuple[int, CohortJob]]] = {}
    level = logging.INFO
    with_callbacks: list[Message] = []
    for i, (message, context) in enumerate(zip(messages, contexts, strict=True)):
        try:
            config = message.content["config"]
            cfg = node.experiment_from(config)
            if cfg.client.cohort is True:
                level = logging.WARNING
            if cfg.client.callbacks:
                with_callbacks.append(message)
                continue  # Keras callbacks run in Keras fit: the per-message handler
            client = node.client_for(message, context)
            options = node.fit_options(config)
            plan = client.plan(int(config[SERVER_ROUND_KEY]), local_steps=options["local_steps"])
            job = CohortJob(
                client,
                node.weights_for(message, context),
                plan,
                options["proximal_mu"],
                scaffold.correction_for(message, context, client),
                options["report"],
            )
        except Exception:  # the per-message handler reports it as it does
            continue
        key = (
            id(client._compiled),
            plan.batch_size,
            options["proximal_mu"] > 0,
            job.correction is not None,
        )
        groups.setdefault(key, []).append((i, job))
    if with_callbacks:
        _fallback("[client] callbacks run in Keras fit", logging.INFO, with_callbacks)
    auto_single = all(
        node.experiment_from(m.content["config"]).client.cohort == "auto" for m in messages
    )
    for (_, batch_size, proximal, corrected), members in groups.items():
        if auto_single and len(members) < 2:  # "auto": one region gains nothing over Keras fit
            for i, _ in members:
                paths.note_fallback(messages[i], "a cohort of one region (client.cohort = 'auto')")
            continue
        compiled = members[0][1].client._compiled
        try:
            trainer = trainer_for(compiled, batch_size, proximal, corrected)
            results = trainer.fit([job for _, job in members])
            personal = _personal_models(compiled, batch_size, members, messages, contexts)
        except Unsupported as exc:
            _fallback(str(exc), level, [messages[i] for i, _ in members])
            continue
        for i, weights in personal.items():  # Ditto: each region keeps its v_k
            ditto.keep(contexts[i], weights)
        for (i, job), result in zip(members, results, strict=True):
            message, context = messages[i], contexts[i]
            if job.report:  # as RegionalClient.fit reports them
                result = _with_reports(job, result)
            reply = client_app.train_reply(
                message, context, job.client, result, trained_by=paths.COHORT
            )
            # The app's mods wrap the handler: run them around the cohort's reply.
            out[i] = make_ffn(_returning(reply), client_app.MODS)(message, context)
    return out


def _same_weights(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> bool:
    if a is b:
        return True
    if a.keys() != b.keys():
        return False
    return all(x is y or np.array_equal(x, y) for x, y in ((a[k], b[k]) for k in a))


def evaluate_cohort(
    messages: Sequence[Message], contexts: Sequence[Context]
) -> list[Message | None]:
    """Reply to many evaluate messages at once, as :func:`clients.app.evaluate` would.

    Regions of the same compiled model that evaluate the same weights (the
    round's global model; not regions with local layers of their own) share one
    ``set_weights`` and one prediction over all their test rows, split back by
    region. Outputs are row by row, so each region's statistics are its own.
    Returns ``None`` for messages left to the per-message handler.
    """
    from clients import app as client_app

    out: list[Message | None] = [None] * len(messages)
    groups: list[tuple[Mapping[str, np.ndarray], list[tuple[int, RegionalClient]]]] = []
    for i, (message, context) in enumerate(zip(messages, contexts, strict=True)):
        try:
            client = node.client_for(message, context)
            weights = ditto.evaluation_weights(message, context) or node.weights_for(
                message, context
            )
        except Exception:  # the per-message handler reports it as it does
            continue
        for group_weights, members in groups:
            if members[0][1]._compiled is client._compiled and _same_weights(
                group_weights, weights
            ):
                members.append((i, client))
                break
        else:
            groups.append((weights, [(i, client)]))
    for weights, members in groups:
        if len(members) < 2:
            continue
        first = members[0][1]
        try:
            first.set_weights(weights)
            tests = [client.arrays.x_test for _, client in members]
            outputs = first.predict(np.concatenate(tests))
        except Exception:
            continue
        start = 0
        for (i, client), x in zip(members, tests, strict=True):
            result = client.score(outputs[start : start + len(x)])
            start += len(x)
            reply = client_app.evaluate_reply(messages[i], client, result)
            out[i] = make_ffn(_returning(reply), client_app.MODS)(messages[i], contexts[i])
    return out


def run_cohort(messages: Sequence[Message], contexts: Sequence[Context]) -> list[Message | None]:
    """The batched entry point (component ``clients.cohort:run_cohort``).

    Train messages go to :func:`train_cohort`, evaluate messages to
    :func:`evaluate_cohort`; ``None`` entries (and other message types) are
    left to the per-message ClientApp.
    """
    from clients import faults

    out: list[Message | None] = [None] * len(messages)
    for kind, handler in (
        (MessageType.TRAIN, train_cohort),
        (MessageType.EVALUATE, evaluate_cohort),
    ):
        picked = []
        for i, m in enumerate(messages):
            if m.metadata.message_type != kind:
                continue
            if faults.for_message(m, contexts[i]) is None:
                picked.append(i)
            else:  # a message with an injected fault (clients.faults) goes through the ClientApp
                paths.note_fallback(m, "an injected fault (clients.faults)")
        if picked:
            replies = handler([messages[i] for i in picked], [contexts[i] for i in picked])
            for i, reply in zip(picked, replies, strict=True):
                out[i] = reply
    return out
