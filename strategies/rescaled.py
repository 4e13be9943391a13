"""A weighted average taken as a scaled step from the round's weights.

q-FFL (:mod:`strategies.qffl`) and FedNova (:mod:`strategies.fednova`) both
update the global weights as ``w - s * sum_k b_k (w - w_k)`` for per-client
coefficients ``b_k`` and a round scale ``s``, which is the same as

    w_new = w - S * (w - avg_b),   avg_b = sum_k b_k w_k / sum_k b_k,  S = s * sum_k b_k

so the streaming, checked weighted average of :func:`strategies.aggregate.weighted_average`
(one accumulator per layer, no list of client copies) does the heavy part, with
the client weights ``b_k``. Floating-point arrays take the step (computed in
float64, stored in the arrays' dtype); integer arrays (a dropout layer's seed
state...) take ``avg_b`` rounded, as in every other fedglobal strategy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message, MetricRecord

from .aggregate import Update
from .errors import AggregationError, StrategyError
from .fedavg import FedAvg

__all__ = ["RescaledAverage", "squared_distance"]


def squared_distance(current: dict[str, np.ndarray], update: dict[str, np.ndarray]) -> float:
    """``sum ||current - update||^2`` over the floating-point arrays, in float64."""
    total = 0.0
    for name, value in update.items():
        if value.dtype.kind != "f":
            continue
        diff = np.asarray(current[name], np.float64) - np.asarray(value, np.float64)
        total += float(np.dot(diff.ravel(), diff.ravel()))
    return total


class RescaledAverage(FedAvg):
    """FedAvg whose result is ``w - scale * (w - avg_b)`` (see the module docstring).

    Subclasses implement :meth:`_coefficient` (``b_k`` of one reply, and the
    terms it adds to the round's sums) and :meth:`_scale` (``S`` from the sums of
    the accepted replies, once every reply of the round has been seen). A
    rejected reply adds nothing.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._current: dict[str, np.ndarray] | None = None
        self._sums: list[float] = []

    def _remember(self, server_round: int, arrays: ArrayRecord) -> None:
        super()._remember(server_round, arrays)
        self._current = {name: array.numpy() for name, array in arrays.items()}

    def _coefficient(
        self, content: Any, label: str, arrays: dict[str, np.ndarray], weight: float
    ) -> tuple[float, tuple[float, ...]]:
        """``(b_k, terms)`` of one reply; ``terms`` are added to the round's sums.

        ``weight`` is the reply's num-examples; a StrategyError rejects the reply.
        """
        raise NotImplementedError

    def _scale(self, sums: list[float]) -> float:
        """The step scale ``S`` from the accepted replies' summed terms."""
        raise NotImplementedError

    def _update_weight(
        self,
        server_round: int,
        content: Any,
        label: str,
        arrays: dict[str, np.ndarray],
        weight: float,
    ) -> float:
        if self._current is None:
            raise StrategyError(
                f"{type(self).__name__}: aggregate_train before configure_train "
                "(the step needs the arrays sent this round)"
            )
        coefficient, terms = self._coefficient(content, label, arrays, weight)
        if not (np.isfinite(coefficient) and coefficient > 0 and np.all(np.isfinite(terms))):
            raise AggregationError(
                f"{type(self).__name__} weight {coefficient!r} (terms {terms}) is not a "
                "finite number > 0",
                client=label,
            )
        if not self._sums:
            self._sums = [0.0] * len(terms)
        self._sums = [a + float(b) for a, b in zip(self._sums, terms, strict=True)]
        return coefficient

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """As FedAvg, with this round's sums started afresh."""
        self._sums = []
        return super().aggregate_train(server_round, replies)

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        averaged = super()._aggregate_arrays(server_round, updates)  # every reply seen
        assert self._current is not None  # _update_weight checked it
        scale = self._scale(self._sums)
        if not np.isfinite(scale):
            raise AggregationError(f"{type(self).__name__}: the round's step scale is {scale}")
        out = {}
        for name, avg in averaged.items():
            if avg.dtype.kind != "f":
                out[name] = avg
                continue
            current = np.asarray(self._current[name], np.float64)
            step = current - scale * (current - np.asarray(avg, np.float64))
            out[name] = step.astype(avg.dtype)
        return out
