"""FedNova: normalised averaging, consistent under unequal local steps.

Wang, Liu, Liang, Joshi and Poor 2020, "Tackling the Objective Inconsistency
Problem in Heterogeneous Federated Optimization" (NeurIPS,
https://arxiv.org/abs/2007.07481). When regions take different numbers of
local steps (stragglers, the clock's deadlines, unequal data with ``epochs``),
FedAvg converges to a stationary point of a *different* objective, weighted
by ``p_k tau_k``. FedNova normalises each region's update by its work:

    d_k     = (w - w_k) / a_k            (the normalised update)
    tau_eff = sum_k p_k a_k
    w_new   = w - tau_eff * sum_k p_k d_k

with ``p_k = n_k / n`` (num-examples) and ``a_k = ||a_k||_1`` of the paper:
``tau_k`` for local SGD, and ``[tau - rho (1 - rho^tau) / (1 - rho)] / (1 - rho)``
for SGD with momentum ``rho`` (section 5). The clients report ``tau_k``, the
optimizer steps they actually took (:mod:`strategies.client_metrics`,
``local-steps``). With equal steps, ``d_k`` scale cancels: ``w_new`` is FedAvg's
example-weighted average (equal to rounding, computed as a step from ``w``).
For adaptive client optimizers (Adam...) the step count is used as it is, a
heuristic the paper does not cover.
"""

from __future__ import annotations

import math
import numbers
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from flwr.supercore import log

from .client_metrics import LOCAL_STEPS, REPORT_KEY, reported
from .errors import InvalidParameterError
from .fedavg import METRICS_KEY
from .rescaled import RescaledAverage

__all__ = ["FedNova", "normalizer"]


def normalizer(steps: float, momentum: float = 0.0) -> float:
    """``||a||_1`` of FedNova for ``steps`` local SGD steps with momentum ``rho``."""
    if momentum == 0.0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho**steps) / (1 - rho)) / (1 - rho)


class FedNova(RescaledAverage):
    """FedNova (Wang et al. 2020): each update normalised by the region's local steps.

    Args:
        momentum: the clients' SGD momentum ``rho`` in [0, 1) (``[client]
            momentum``), which changes the normalisation; 0 for plain SGD.
        drop_stragglers: default False: FedNova is made to aggregate partial work.
        **kwargs: the other :class:`~strategies.fedavg.FedAvg` parameters.
    """

    def __init__(
        self, *, momentum: float = 0.0, drop_stragglers: bool = False, **kwargs: Any
    ) -> None:
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, numbers.Real)
            or not math.isfinite(float(momentum))
            or not 0.0 <= momentum < 1.0
        ):
            raise InvalidParameterError(f"momentum must be a number in [0, 1), got {momentum!r}")
        super().__init__(drop_stragglers=drop_stragglers, **kwargs)
        self.momentum = float(momentum)
        self._params["momentum"] = momentum

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> FedNova: client momentum %g", self.momentum)
        super().summary()

    def _train_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        out = super()._train_config(config, server_round)
        out[REPORT_KEY] = [LOCAL_STEPS]
        return out

    def _coefficient(
        self, content: Any, label: str, arrays: dict[str, np.ndarray], weight: float
    ) -> tuple[float, tuple[float, ...]]:
        steps = reported(content.get(METRICS_KEY), LOCAL_STEPS, client=label, minimum=1.0)
        norm = normalizer(steps, self.momentum)
        # b_k = p_k / a_k: sum_k p_k d_k = (sum b) (w - avg_b)
        return weight / norm, (weight, weight * norm, weight / norm)

    def _scale(self, sums: list[float]) -> float:
        total, work, total_b = sums
        tau_eff = work / total
        return tau_eff * total_b / total
