"""RegionalClient: one region's local training and evaluation, in Keras.

The client trains the process's compiled model (see ``clients.models``) on its
own region's rows only, under the ``tf.distribute`` strategy named in the
config. Weights come in and go out *named* by Keras variable path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from clients.callbacks import make_callbacks
from clients.models import CompiledModel, compiled_model
from fedglobal import metrics
from fedglobal.config import ExperimentConfig
from fedglobal.data import RegionArrays, Schema, make_dataset, shuffle_seed
from strategies.client_metrics import LEARNING_RATE, LOCAL_STEPS, START_LOSS

_PREDICT_CHUNK = 8192


@dataclass(frozen=True)
class FitResult:
    """What a client sends back after local training: weights, count, metrics."""

    weights: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainPlan:
    """One round of local training for one region (see :meth:`RegionalClient.plan`).

    Attributes:
        seed: from (experiment seed, round, region); seeds the order and the layers.
        order: the row order of every pass over the training rows.
        batch_size: rows per step.
        steps: optimizer steps in all.
        steps_per_epoch: batches per pass, the last one possibly partial; 0 means
            the passes repeat back to back and every batch is full (``steps`` or a
            straggler's partial work).
        epochs: Keras ``fit`` epochs.
        loss_from: the reported loss is the mean over steps ``loss_from..steps-1``
            (the last epoch, as Keras's history reports it), weighted by batch size.
    """

    seed: int
    order: np.ndarray
    batch_size: int
    steps: int
    steps_per_epoch: int
    epochs: int
    loss_from: int

    @property
    def repeats(self) -> bool:
        """Whether batches run across passes (a fixed number of steps)."""
        return self.steps_per_epoch == 0


def row_loss(name: str) -> keras.losses.Loss:
    """The compiled loss ``name`` as a Keras loss with one value per row (no reduction)."""
    if name == "sparse_categorical_crossentropy":
        return keras.losses.SparseCategoricalCrossentropy(reduction=None)
    if name == "mse":
        return keras.losses.MeanSquaredError(reduction=None)
    raise ValueError(f"no per-row form of the loss {name!r}")


def shuffle_order(n: int, seed: int) -> np.ndarray:
    """The row order of a region's training pass, a pure function of ``(n, seed)``."""
    return np.random.default_rng([seed, 0x0DE5]).permutation(n)


@dataclass(frozen=True)
class EvaluateResult:
    """Test-split metrics and the sufficient statistics they come from."""

    num_examples: int
    metrics: dict[str, float]
    stats: dict[str, float]


class RegionalClient:
    """Trains and evaluates the global model on one region's data.

    Args:
        arrays: the region's encoded train and test rows.
        config: the experiment (``[model]`` and ``[client]`` sections are used).
        schema: the federated schema the model is built for.
    """

    def __init__(self, arrays: RegionArrays, config: ExperimentConfig, schema: Schema) -> None:
        self.arrays = arrays
        self.config = config
        self.schema = schema
        self._compiled: CompiledModel = compiled_model(config.model, config.client, schema)

    @property
    def region(self) -> str:
        return self.arrays.region

    @property
    def model(self) -> keras.Model:
        return self._compiled.model

    @property
    def variable_names(self) -> list[str]:
        return list(self._compiled.names)

    @property
    def trainable_names(self) -> list[str]:
        """Paths of the trainable variables (those a gradient step changes)."""
        return [v.path for v in self.model.inner.trainable_variables]

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        """Load named weights into the model (every variable must be given)."""
        names = self._compiled.names
        missing = [n for n in names if n not in weights]
        if missing:
            raise ValueError(f"region {self.region}: weights lack variables {missing[:5]}")
        self.model.set_weights([weights[n] for n in names])

    def get_weights(self) -> dict[str, np.ndarray]:
        """The model's current weights, named."""
        return dict(zip(self._compiled.names, self.model.get_weights(), strict=True))

    def full_steps(self) -> int:
        """Local steps of a full round: ``[client] steps``, else epochs x batches."""
        client = self.config.client
        if client.steps:
            return int(client.steps)
        return client.epochs * max(1, math.ceil(len(self.arrays.x_train) / client.batch_size))

    def plan(self, server_round: int, *, local_steps: int | None = None) -> TrainPlan:
        """This round's schedule: row order, number of steps, where the reported loss starts.

        Both training paths follow it: :meth:`fit` (Keras ``fit`` on ``tf.data``) and
        cohort training (:mod:`clients.cohort`), so that with the same seed they
        visit the same batches in the same order.
        """
        client = self.config.client
        if local_steps is not None and local_steps < 1:
            raise ValueError(f"region {self.region}: local_steps must be >= 1, got {local_steps}")
        n = len(self.arrays.x_train)
        seed = shuffle_seed(self.config.experiment.seed, server_round, self.region)
        order = shuffle_order(n, seed) if client.shuffle else np.arange(n)
        batches = max(1, math.ceil(n / client.batch_size))
        if local_steps is not None and local_steps < self.full_steps():
            return TrainPlan(seed, order, client.batch_size, local_steps, 0, 1, 0)
        if client.steps:
            return TrainPlan(seed, order, client.batch_size, int(client.steps), 0, 1, 0)
        steps = client.epochs * batches
        return TrainPlan(
            seed, order, client.batch_size, steps, batches, client.epochs, steps - batches
        )

    def fit(
        self,
        weights: Mapping[str, np.ndarray],
        server_round: int,
        *,
        proximal_mu: float = 0.0,
        local_steps: int | None = None,
        report: Sequence[str] = (),
        correction: Mapping[str, np.ndarray] | None = None,
        proximal_anchor: Mapping[str, np.ndarray] | None = None,
    ) -> FitResult:
        """Local training from ``weights``; returns the new weights and train loss.

        Args:
            weights: the round's starting (global) weights, by name.
            server_round: the round, which seeds the shuffle with the region.
            proximal_mu: FedProx's ``mu`` (Li et al. 2020): the training loss gains
                ``mu/2 * ||w - weights||^2``. 0 (the default) is plain FedAvg.
            local_steps: stop after this many optimizer steps if fewer than the
                full round (:meth:`full_steps`): a straggler's partial work.
            report: extra metrics the strategy asks for
                (:mod:`strategies.client_metrics`; see :meth:`extra_metrics`).
            correction: SCAFFOLD's ``c - c_i`` by trainable variable (Karimireddy
                et al. 2020; :mod:`clients.scaffold`): every local gradient gains it.
            proximal_anchor: the ``w_global`` of the proximal term, if not
                ``weights`` (Ditto's personal model, Li et al. 2021, starts from the
                region's own weights and is pulled towards the global ones).

        The ``[client] callbacks`` are made afresh for this fit
        (:func:`clients.callbacks.make_callbacks`) and passed to Keras ``fit``. A
        callback that stops training early (``EarlyStopping``, ``TerminateOnNaN``)
        ends this region's round; the weights at that point are its reply.
        """
        plan = self.plan(server_round, local_steps=local_steps)
        start_loss = self.start_loss(weights) if START_LOSS in report else None
        # Per-call seeds only: the layers' own streams restart from (seed, round,
        # region). No global reset (keras.utils.set_random_seed): tf.random.set_seed
        # clears TensorFlow's kernel cache, so every fit rebuilt its train function
        # (about 300 ms per region against 50 ms for the fit itself, measured).
        self._compiled.reseed(plan.seed)
        if proximal_anchor is not None:  # w_global other than the start (Ditto)
            self.set_weights(proximal_anchor)
            self._compiled.set_proximal(proximal_mu)
        self.set_weights(weights)
        self._compiled.reset_optimizer()
        if proximal_anchor is None:
            self._compiled.set_proximal(proximal_mu)
        self._compiled.set_correction(None if correction is None else dict(correction))
        x, y = self.arrays.x_train, self.arrays.y_train
        data = make_dataset(
            x[plan.order],
            y[plan.order],
            batch_size=plan.batch_size,
            shuffle=False,  # already in the plan's order, seeded by (seed, round, region)
            repeat=plan.repeats,
        )
        if plan.repeats:  # a finite dataset: Keras may run several steps per call
            data = data.take(plan.steps)
        callbacks = make_callbacks(
            self.config.client, region=self.region, server_round=server_round
        )
        with self._compiled.strategy.scope():
            history = self.model.fit(
                data,
                epochs=plan.epochs,
                shuffle=False,
                verbose=0,
                callbacks=callbacks,
            )
        losses = history.history.get("loss", [float("nan")])
        steps = int(np.asarray(self.model.optimizer.iterations))  # early stopping: fewer
        return FitResult(
            weights=self.get_weights(),
            num_examples=len(x),
            metrics={
                "loss": float(losses[-1]),
                **self.extra_metrics(report, start_loss=start_loss, steps=steps),
            },
        )

    def extra_metrics(
        self, report: Sequence[str], *, start_loss: float | None, steps: int
    ) -> dict[str, float]:
        """The extra train metrics a strategy asked for (:mod:`strategies.client_metrics`).

        Args:
            report: the names asked for; names this client does not know are ignored.
            start_loss: :meth:`start_loss` at the round's start weights (if asked).
            steps: the optimizer steps taken this round.
        """
        out: dict[str, float] = {}
        if START_LOSS in report and start_loss is not None:
            out[START_LOSS] = float(start_loss)
        if LOCAL_STEPS in report:
            out[LOCAL_STEPS] = int(steps)
        if LEARNING_RATE in report:
            out[LEARNING_RATE] = float(self.config.client.learning_rate)
        return out

    def start_loss(self, weights: Mapping[str, np.ndarray]) -> float:
        """Mean training loss of ``weights`` over all the region's training rows.

        Inference mode (no dropout; batch normalisation with its moving
        statistics), the model's compiled loss, unweighted mean over rows:
        q-FFL's ``F_k(w^t)`` (Li et al. 2020). Leaves ``weights`` loaded.
        """
        self.set_weights(weights)
        x, y = self.arrays.x_train, self.arrays.y_train
        if len(x) == 0:
            return 0.0
        loss = row_loss(self.model.loss)
        total = 0.0
        for i in range(0, len(x), _PREDICT_CHUNK):
            out = self.predict(x[i : i + _PREDICT_CHUNK])
            per_row = keras.ops.convert_to_numpy(loss(y[i : i + _PREDICT_CHUNK], out))
            total += float(np.sum(per_row, dtype=np.float64))
        return total / len(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Model outputs for ``x`` (probabilities, or predictions in target units)."""
        outs = [
            self._compiled.predict(x[i : i + _PREDICT_CHUNK])
            for i in range(0, len(x), _PREDICT_CHUNK)
        ]
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def evaluate(self, weights: Mapping[str, np.ndarray] | None = None) -> EvaluateResult:
        """Metrics on the region's test split (loss plus task metrics)."""
        if weights is not None:
            self.set_weights(weights)
        return self.score(self.predict(self.arrays.x_test))

    def score(self, out: np.ndarray) -> EvaluateResult:
        """Metrics of the model outputs ``out`` for the region's test rows."""
        y = self.arrays.y_test
        if self.schema.task == "classification":
            stats = metrics.classification_stats(y, out, self.schema.num_classes)
        else:
            stats = metrics.regression_stats(y, out)
        return EvaluateResult(
            num_examples=len(y),
            metrics=metrics.finalize(stats, self.schema.task),
            stats=stats,
        )
