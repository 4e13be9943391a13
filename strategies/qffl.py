"""q-FFL: fair resource allocation, aggregated with q-FedAvg.

Li, Sanjabi, Beirami and Smith 2020, "Fair Resource Allocation in Federated
Learning" (ICLR, https://arxiv.org/abs/1905.10497). The objective
``f_q(w) = sum_k p_k / (q + 1) * F_k(w)^(q + 1)`` gives regions with a higher
loss more weight as ``q`` grows; ``q = 0`` is FedAvg's objective. Algorithm 2
(q-FedAvg), with ``L = 1 / lr`` (the clients' learning rate) as the paper's
Lipschitz estimate, ``w`` the round's weights and ``w_k`` region k's trained
weights:

    Delta_k = F_k(w)^q * L * (w - w_k)
    h_k     = q * F_k(w)^(q - 1) * L^2 * ||w - w_k||^2 + L * F_k(w)^q
    w_new   = w - sum_k p_k Delta_k / sum_k p_k h_k

The paper samples clients with probability ``p_k = n_k / n`` and averages them
uniformly; fedglobal samples uniformly and weights by ``p_k`` (num-examples),
the same expectation, so that with ``q = 0`` the step is FedAvg's
example-weighted average (equal to rounding: it is computed as a step from
``w``). ``F_k(w)`` is each region's mean training loss at the round's start
weights, which the clients report when asked (:mod:`strategies.client_metrics`,
``start-loss``); ``F_k(w) + 1e-10`` is used, as in the authors' code, so that a
zero loss does not zero the weight.
"""

from __future__ import annotations

import math
import numbers
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from flwr.supercore import log

from .client_metrics import LEARNING_RATE, REPORT_KEY, START_LOSS, reported
from .errors import InvalidParameterError
from .fedavg import METRICS_KEY
from .rescaled import RescaledAverage, squared_distance

__all__ = ["QFFL"]

#: Added to every reported loss before raising it to a power (the authors' code).
LOSS_EPSILON = 1e-10


def _nonnegative(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or value < 0
    ):
        raise InvalidParameterError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class QFFL(RescaledAverage):
    """q-FFL (Li et al. 2020) by q-FedAvg: regions with a higher loss weigh more.

    Each round's train config asks the clients for their loss at the start
    weights (and, unless ``client_learning_rate`` is given, their learning rate);
    the server step is the paper's Algorithm 2 (see the module docstring).

    Args:
        q: fairness exponent ``q >= 0``; 0 is FedAvg, larger is fairer (the
            paper's experiments use 0.001-15).
        client_learning_rate: the clients' learning rate ``lr`` for ``L = 1/lr``;
            None (default): each client reports its own ``[client] learning_rate``.
        **kwargs: the other :class:`~strategies.fedavg.FedAvg` parameters.
    """

    def __init__(
        self, *, q: float = 1.0, client_learning_rate: float | None = None, **kwargs: Any
    ) -> None:
        q = _nonnegative("q", q)
        if client_learning_rate is not None:
            lr = _nonnegative("client_learning_rate", client_learning_rate)
            if lr == 0:
                raise InvalidParameterError(
                    f"client_learning_rate must be > 0, got {client_learning_rate!r}"
                )
        super().__init__(**kwargs)
        self.q = q
        self.client_learning_rate = (
            None if client_learning_rate is None else float(client_learning_rate)
        )
        self._params["q"] = q
        self._params["client_learning_rate"] = client_learning_rate

    def summary(self) -> None:
        """Log the strategy's configuration."""
        lr = "reported" if self.client_learning_rate is None else f"{self.client_learning_rate:g}"
        log(INFO, "\t├──> q-FFL: q %g, client learning rate %s", self.q, lr)
        super().summary()

    def _train_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        out = super()._train_config(config, server_round)
        asked = (
            [START_LOSS] if self.client_learning_rate is not None else [START_LOSS, LEARNING_RATE]
        )
        out[REPORT_KEY] = asked
        return out

    def _coefficient(
        self, content: Any, label: str, arrays: dict[str, np.ndarray], weight: float
    ) -> tuple[float, tuple[float, ...]]:
        metrics = content.get(METRICS_KEY)
        loss = reported(metrics, START_LOSS, client=label) + LOSS_EPSILON
        lr = self.client_learning_rate
        if lr is None:
            lr = reported(metrics, LEARNING_RATE, client=label, minimum=1e-300)
        lipschitz = 1.0 / lr
        assert self._current is not None
        distance = squared_distance(self._current, arrays)
        loss_q = loss**self.q
        a = weight * loss_q * lipschitz  # p_k F^q L: Delta_k = a_k (w - w_k) / p_k
        h = weight * (self.q * loss ** (self.q - 1) * lipschitz**2 * distance + lipschitz * loss_q)
        return a, (a, h)

    def _scale(self, sums: list[float]) -> float:
        total_a, total_h = sums
        return total_a / total_h
