"""Server-optimizer strategies: FedAvgM, FedAdagrad, FedAdam, FedYogi.

Each round the accepted replies are averaged as in FedAvg (streaming, checked),
then a server optimizer turns the pseudo-gradient ``averaged - current`` into
the new global weights (maths in :mod:`strategies.server_opt`):

- :class:`FedAvgM`: server momentum, Hsu et al. 2019, "Measuring the Effects of
  Non-Identical Data Distribution for Federated Visual Classification".
- :class:`FedAdagrad`, :class:`FedAdam`, :class:`FedYogi`: adaptive server
  optimizers, Reddi et al. 2021, "Adaptive Federated Optimization" (ICLR).

The optimizer state (velocity, or the moments ``m`` and ``v``) is an explicit
attribute, saved and restored by ``state_dict()`` / ``load_state_dict()``.

Flower's FedAvgM/FedOpt classes are not subclassed: they hook their own
``configure_train``/``aggregate_train``, which fedglobal's FedAvg replaces
(seeded sampling, checked replies), and they initialise ``v`` to 0 rather than
the paper's ``v_{-1} >= tau^2`` and add a bias correction to FedAdam that the
paper does not have. Tests check our steps against Flower's where they agree.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from logging import INFO
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
from flwr.app import ArrayRecord
from flwr.supercore import log

from .aggregate import Update
from .errors import InvalidParameterError, StrategyError
from .fedavg import FedAvg
from .server_opt import adaptive_step, momentum_step

__all__ = ["FedAdagrad", "FedAdam", "FedAvgM", "FedYogi"]


def _real(name: str, value: object, *, low: float, high: float = math.inf, open_low: bool) -> float:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(float(value))
        and (value > low if open_low else value >= low)
        and value < high
    )
    if not ok:
        lower = f"> {low:g}" if open_low else f">= {low:g}"
        upper = f" and < {high:g}" if math.isfinite(high) else ""
        raise InvalidParameterError(f"{name} must be a finite number {lower}{upper}, got {value!r}")
    return float(value)


def _arrays_state(value: object, what: str) -> dict[str, np.ndarray] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise StrategyError(f"state {what!r} must be a dict of arrays or None")
    return {str(k): np.array(v, copy=True) for k, v in value.items()}


def _copy(arrays: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
    return None if arrays is None else {k: np.array(v, copy=True) for k, v in arrays.items()}


class _ServerOptimizer(FedAvg):
    """FedAvg, then a server optimizer step from the arrays sent this round."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._current: dict[str, np.ndarray] | None = None

    def _remember(self, server_round: int, arrays: ArrayRecord) -> None:
        super()._remember(server_round, arrays)
        self._current = {name: array.numpy() for name, array in arrays.items()}

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        averaged = super()._aggregate_arrays(server_round, updates)
        if self._current is None:
            raise StrategyError(
                f"{type(self).__name__}: aggregate_train before configure_train "
                "(the server step needs the arrays sent this round)"
            )
        return self._step(self._current, averaged)

    def _step(
        self, current: dict[str, np.ndarray], averaged: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        raise NotImplementedError


class FedAvgM(_ServerOptimizer):
    """FedAvg with server momentum (Hsu et al. 2019).

    ``v = server_momentum * v + (averaged - current)``;
    ``new = current + server_learning_rate * v``. With ``server_learning_rate = 1``
    and ``server_momentum = 0`` this is FedAvg, exactly.

    Args:
        server_learning_rate: server step size, > 0.
        server_momentum: momentum coefficient in [0, 1).
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.

    Attributes:
        velocity: ``{name: array}`` momentum buffer, None before the first step.
    """

    def __init__(
        self, *, server_learning_rate: float = 1.0, server_momentum: float = 0.9, **kwargs: Any
    ) -> None:
        lr = _real("server_learning_rate", server_learning_rate, low=0.0, open_low=True)
        momentum = _real("server_momentum", server_momentum, low=0.0, high=1.0, open_low=False)
        super().__init__(**kwargs)
        self.server_learning_rate = lr
        self.server_momentum = momentum
        self._params.update(
            server_learning_rate=server_learning_rate, server_momentum=server_momentum
        )
        self.velocity: dict[str, np.ndarray] | None = None

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(
            INFO,
            "\t├──> FedAvgM: server lr %g, momentum %g",
            self.server_learning_rate,
            self.server_momentum,
        )
        super().summary()

    def _step(
        self, current: dict[str, np.ndarray], averaged: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        new, self.velocity = momentum_step(
            current,
            averaged,
            self.velocity,
            lr=self.server_learning_rate,
            momentum=self.server_momentum,
        )
        return new

    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus ``"velocity"`` (``{name: array}`` or None)."""
        return {**super().state_dict(), "velocity": _copy(self.velocity)}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.velocity = _arrays_state(state["velocity"], "velocity")


class _Adaptive(_ServerOptimizer):
    """Shared parameters and state of FedAdagrad, FedAdam and FedYogi.

    A subclass names its ``kind`` and its ``defaults`` (Reddi et al. 2021's
    settings); an argument left out (None) takes the class's default.
    """

    kind = ""
    defaults: ClassVar[Mapping[str, float]] = MappingProxyType(
        {"eta": 0.01, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}
    )

    def __init__(
        self,
        *,
        eta: float | None = None,
        beta_1: float | None = None,
        beta_2: float | None = None,
        tau: float | None = None,
        initial_accumulator: float | None = None,
        **kwargs: Any,
    ) -> None:
        given = {"eta": eta, "beta_1": beta_1, "beta_2": beta_2, "tau": tau}
        values = {k: self.defaults[k] if v is None else v for k, v in given.items()}
        self.eta = _real("eta", values["eta"], low=0.0, open_low=True)
        self.beta_1 = _real("beta_1", values["beta_1"], low=0.0, high=1.0, open_low=False)
        self.beta_2 = _real("beta_2", values["beta_2"], low=0.0, high=1.0, open_low=False)
        self.tau = _real("tau", values["tau"], low=0.0, open_low=True)
        self.initial_accumulator = (
            self.tau**2
            if initial_accumulator is None
            else _real("initial_accumulator", initial_accumulator, low=0.0, open_low=False)
        )
        super().__init__(**kwargs)
        self._params.update(**values, initial_accumulator=initial_accumulator)
        self.m: dict[str, np.ndarray] | None = None
        self.v: dict[str, np.ndarray] | None = None

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(
            INFO,
            "\t├──> %s: eta %g, beta_1 %g, beta_2 %g, tau %g, v0 %g",
            type(self).__name__,
            self.eta,
            self.beta_1,
            self.beta_2,
            self.tau,
            self.initial_accumulator,
        )
        super().summary()

    def _step(
        self, current: dict[str, np.ndarray], averaged: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        new, self.m, self.v = adaptive_step(
            self.kind,
            current,
            averaged,
            self.m,
            self.v,
            eta=self.eta,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            tau=self.tau,
            initial_accumulator=self.initial_accumulator,
        )
        return new

    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus the moments ``"m"`` and ``"v"`` (``{name: array}`` or None)."""
        return {**super().state_dict(), "m": _copy(self.m), "v": _copy(self.v)}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.m = _arrays_state(state["m"], "m")
        self.v = _arrays_state(state["v"], "v")


class FedAdagrad(_Adaptive):
    """FedAdagrad (Reddi et al. 2021): ``v = v + delta**2``.

    Then ``x += eta * m / (sqrt(v) + tau)``.

    Args:
        eta: server learning rate, > 0.
        beta_1: first-moment (momentum) decay in [0, 1).
        beta_2: second-moment decay in [0, 1) (unused by Adagrad).
        tau: adaptivity (epsilon) > 0; larger is less adaptive.
        initial_accumulator: ``v`` before the first round (>= 0); default
            ``tau**2`` (the paper's ``v_{-1} >= tau^2``).
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.

    Attributes:
        m, v: ``{name: array}`` moments, None before the first step.

    The step is adaptive, so it is FedAvg only in a limit: with ``beta_1 = 0``,
    ``initial_accumulator = 0`` and ``eta = tau`` large, ``current + step`` tends
    to the FedAvg average (tested).
    """

    kind = "adagrad"
    defaults = MappingProxyType({**_Adaptive.defaults, "beta_1": 0.0})


class FedAdam(_Adaptive):
    """FedAdam (Reddi et al. 2021): ``v = beta_2 * v + (1 - beta_2) * delta**2``.

    Then ``x += eta * m / (sqrt(v) + tau)``, with no bias correction (as in the paper).
    Args:
        eta: server learning rate, > 0.
        beta_1: first-moment (momentum) decay in [0, 1).
        beta_2: second-moment decay in [0, 1).
        tau: adaptivity (epsilon) > 0; larger is less adaptive.
        initial_accumulator: ``v`` before the first round (>= 0); default
            ``tau**2`` (the paper's ``v_{-1} >= tau^2``).
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.

    Attributes:
        m, v: ``{name: array}`` moments, None before the first step.

    The step is adaptive, so it is FedAvg only in a limit: with ``beta_1 = 0``,
    ``initial_accumulator = 0`` and ``eta = tau`` large, ``current + step`` tends
    to the FedAvg average (tested).
    """

    kind = "adam"


class FedYogi(_Adaptive):
    """FedYogi (Reddi et al. 2021): ``v = v - (1 - beta_2) * delta**2 * sign(v - delta**2)``.

    Then ``x += eta * m / (sqrt(v) + tau)``; ``v`` grows more slowly than Adam's.
    Args:
        eta: server learning rate, > 0.
        beta_1: first-moment (momentum) decay in [0, 1).
        beta_2: second-moment decay in [0, 1).
        tau: adaptivity (epsilon) > 0; larger is less adaptive.
        initial_accumulator: ``v`` before the first round (>= 0); default
            ``tau**2`` (the paper's ``v_{-1} >= tau^2``).
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.

    Attributes:
        m, v: ``{name: array}`` moments, None before the first step.

    The step is adaptive, so it is FedAvg only in a limit: with ``beta_1 = 0``,
    ``initial_accumulator = 0`` and ``eta = tau`` large, ``current + step`` tends
    to the FedAvg average (tested).
    """

    kind = "yogi"
