"""Ditto: fair and robust federated learning through personalisation.

Li, Hu, Beirami and Smith 2021, "Ditto: Fair and Robust Federated Learning
Through Personalization" (ICML, https://arxiv.org/abs/2012.04221), Algorithm 1.
Each region keeps a personal model ``v_k`` besides training the global one:

- the global model ``w`` is trained and averaged as in FedAvg (the region's
  update of ``w`` is exactly FedAvg's);
- in the same round the region also trains ``v_k`` on its own rows with the
  proximal objective ``F_k(v) + lambda/2 * ||v - w||^2`` (``w``: the round's
  global weights), starting from its previous ``v_k`` (the first time from ``w``);
- ``v_k`` never leaves the region (it lives in the ClientApp state, which
  checkpoints save and resumes restore), and federated evaluation evaluates
  each region's ``v_k`` on its own test rows: personalised, like FedPer's.

``lambda`` trades personalisation (small) for the global model's
robustness (large; ``lambda -> infinity`` is FedAvg's global model).
"""

from __future__ import annotations

import math
import numbers
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord
from flwr.supercore import log

from .errors import InvalidParameterError
from .fedavg import FedAvg

__all__ = ["LAMBDA_KEY", "PERSONAL_KEY", "Ditto"]

#: Train config key: ``lambda`` of the personal models' proximal term.
LAMBDA_KEY = "ditto-lambda"
#: Train and evaluate config key (true): regions evaluate their personal model.
PERSONAL_KEY = "ditto-personal"


class Ditto(FedAvg):
    """Ditto (Li et al. 2021): a personal model per region, pulled towards the global one.

    The server aggregates the global model as FedAvg. Each round's configs carry
    ``"ditto-lambda"`` (train) and ``"ditto-personal"`` (train and evaluate);
    fedglobal's clients (:mod:`clients.ditto`) train and keep the personal models
    and evaluate them, on the Keras ``fit`` path and in cohort training alike.

    Args:
        lam: ``lambda >= 0``, the personal models' proximal coefficient (0: purely
            local models; large: close to the global model).
        **kwargs: the other :class:`~strategies.fedavg.FedAvg` parameters.
    """

    #: Models a region trains per local step (the global and its personal one): the
    #: simulated clock (``[geo]``) counts twice FedAvg's compute per step.
    local_work = 2.0

    def __init__(self, *, lam: float = 0.1, **kwargs: Any) -> None:
        if (
            isinstance(lam, bool)
            or not isinstance(lam, numbers.Real)
            or not math.isfinite(float(lam))
            or lam < 0
        ):
            raise InvalidParameterError(f"lam must be a finite number >= 0, got {lam!r}")
        super().__init__(**kwargs)
        self.lam = float(lam)
        self._params["lam"] = lam
        self._names: list[str] = []

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> Ditto: lambda %g (personalised evaluation)", self.lam)
        super().summary()

    def personal_variables(self) -> list[str]:
        """Every variable of the model: a region's whole model is personal.

        The server's ``[output] personal_models`` asks the regions for these at
        the end of a run (empty before the first ``configure_train``).
        """
        return list(self._names)

    def _remember(self, server_round: int, arrays: ArrayRecord) -> None:
        super()._remember(server_round, arrays)
        self._names = list(arrays.keys())

    def _round_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        out = super()._round_config(config, server_round)
        out[PERSONAL_KEY] = True
        return out

    def _train_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        out = super()._train_config(config, server_round)
        out[LAMBDA_KEY] = self.lam
        return out
