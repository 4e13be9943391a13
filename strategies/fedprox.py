"""FedProx: FedAvg plus a proximal term in each client's local objective.

Li et al. 2020, "Federated Optimization in Heterogeneous Networks" (MLSys,
https://arxiv.org/abs/1812.06127). Each client minimises
``F_k(w) + mu/2 * ||w - w_global||^2`` from the round's global weights; the
server aggregates as FedAvg. FedProx also tolerates partial work: updates of
stragglers (clients that did fewer local steps) are aggregated, not dropped.
"""

from __future__ import annotations

import math
import numbers
from logging import INFO
from typing import Any

from flwr.app import ConfigRecord
from flwr.supercore import log

from .errors import InvalidParameterError
from .fedavg import FedAvg

__all__ = ["PROXIMAL_MU_KEY", "FedProx"]

#: Train config key carrying mu to the clients (the same key as Flower's FedProx).
PROXIMAL_MU_KEY = "proximal-mu"


class FedProx(FedAvg):
    """FedProx (Li et al. 2020): clients add ``mu/2 * ||w - w_global||^2`` to their loss.

    The strategy puts ``"proximal-mu"`` (float) in each round's train config (a
    copy: the caller's config is not changed). fedglobal's clients
    (:class:`clients.regional.RegionalClient`) add the term inside their Keras
    train step, with ``w_global`` the weights the round started from. ``mu = 0``
    is FedAvg exactly.

    Args:
        proximal_mu: the proximal coefficient ``mu >= 0``.
        drop_stragglers: default False: FedProx aggregates the partial work of
            stragglers (see ``stragglers`` in :class:`~strategies.fedavg.FedAvg`).
        **kwargs: the other :class:`~strategies.fedavg.FedAvg` parameters.
    """

    def __init__(
        self, *, proximal_mu: float = 0.01, drop_stragglers: bool = False, **kwargs: Any
    ) -> None:
        if (
            isinstance(proximal_mu, bool)
            or not isinstance(proximal_mu, numbers.Real)
            or not math.isfinite(float(proximal_mu))
            or proximal_mu < 0
        ):
            raise InvalidParameterError(
                f"proximal_mu must be a finite number >= 0, got {proximal_mu!r}"
            )
        super().__init__(drop_stragglers=drop_stragglers, **kwargs)
        self.proximal_mu = float(proximal_mu)
        self._params["proximal_mu"] = proximal_mu

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> FedProx: proximal mu %g", self.proximal_mu)
        super().summary()

    def _train_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        out = super()._train_config(config, server_round)
        out[PROXIMAL_MU_KEY] = self.proximal_mu
        return out
