"""DP-FedAvg: user-level differential privacy with fixed clipping and Gaussian noise.

McMahan et al. 2018, "Learning Differentially Private Recurrent Language
Models" (ICLR, https://arxiv.org/abs/1710.06963). Each accepted client update
``delta_k = w_k - w`` is clipped to L2 norm ``clipping_norm`` (C) over all
layers, the clipped updates are averaged *uniformly* over the m accepted
clients (example counts would change the sensitivity), and Gaussian noise with
standard deviation ``noise_multiplier * C / m`` is added to the average. The
privacy loss is tracked with Flower's Rényi-DP accountant
(``flwr.supercore.privacy_accounting.RdpAccountant``, Mironov 2017), without
amplification by sampling: a conservative bound.

``clipping = "client"`` also asks each client to clip its own update before it
leaves (Flower's ``fixedclipping_mod``, applied by fedglobal's ClientApp when
the train config carries ``clipping_norm``); the server clips again, which
changes nothing for an honest client and bounds a dishonest one.

Noise is drawn from ``numpy.random.default_rng([seed, round, 3])``: the same
seed gives the same history (DESIGN decision 8).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log
from flwr.supercore.privacy_accounting import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)

from .aggregate import Update
from .errors import InvalidParameterError
from .fedavg import FedAvg

__all__ = ["CLIPPING_NORM_KEY", "DPFedAvg"]

#: Train config key of the client-side clipping norm (Flower's KEY_CLIPPING_NORM).
CLIPPING_NORM_KEY = "clipping_norm"
_NOISE_STREAM = 3


def _positive(name: str, value: object, *, allow_zero: bool = False) -> float:
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
        and (float(value) >= 0 if allow_zero else float(value) > 0)
    )
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidParameterError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def clip_update(
    arrays: dict[str, np.ndarray], current: Mapping[str, np.ndarray], clipping_norm: float
) -> float:
    """Clip ``arrays - current`` to L2 norm ``clipping_norm`` in place; return the norm."""
    deltas = {n: np.asarray(arrays[n], np.float64) - current[n] for n in current}
    norm = math.sqrt(sum(float(np.vdot(d, d)) for d in deltas.values()))
    scale = min(1.0, clipping_norm / norm) if norm > 0 else 1.0
    for name, delta in deltas.items():
        arrays[name] = (current[name] + delta * scale).astype(arrays[name].dtype)
    return norm


class DPFedAvg(FedAvg):
    """DP-FedAvg with fixed clipping (McMahan et al. 2018) and an RDP accountant.

    Args:
        noise_multiplier: z > 0; the noise std is ``z * clipping_norm / m``.
        clipping_norm: C > 0, the L2 bound on each client's update (all layers).
        clipping: ``"server"`` (the server clips) or ``"client"`` (clients clip
            before sending, and the server clips again).
        target_delta: the delta at which epsilon is reported.
        **kwargs: the other :class:`~strategies.fedavg.FedAvg` parameters.
    """

    def __init__(
        self,
        *,
        noise_multiplier: float = 1.0,
        clipping_norm: float = 1.0,
        clipping: str = "server",
        target_delta: float = 1e-5,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.noise_multiplier = _positive("noise_multiplier", noise_multiplier)
        self.clipping_norm = _positive("clipping_norm", clipping_norm)
        if clipping not in ("server", "client"):
            raise InvalidParameterError(f"clipping must be 'server' or 'client', got {clipping!r}")
        self.clipping = clipping
        self.target_delta = _positive("target_delta", target_delta)
        if self.target_delta >= 1:
            raise InvalidParameterError(f"target_delta must be < 1, got {target_delta!r}")
        self._params.update(
            noise_multiplier=noise_multiplier,
            clipping_norm=clipping_norm,
            clipping=clipping,
            target_delta=target_delta,
        )
        self.accountant: Any = None
        self._accountant_state: dict[str, Any] | None = None
        self._current: dict[str, np.ndarray] = {}
        self.clipped: list[dict[str, Any]] = []

    # -- sending -------------------------------------------------------------
    def _train_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        out = super()._train_config(config, server_round)
        if self.clipping == "client":
            out[CLIPPING_NORM_KEY] = self.clipping_norm
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._current = {k: v.numpy() for k, v in arrays.items()}
        self._population = len(list(grid.get_node_ids()))
        return messages

    # -- aggregation ---------------------------------------------------------
    def _update_weight(
        self,
        server_round: int,
        content: RecordDict,
        label: str,
        arrays: dict[str, np.ndarray],
        weight: float,
    ) -> float:
        norm = clip_update(arrays, self._current, self.clipping_norm)
        if norm > self.clipping_norm:
            self.clipped.append({"round": server_round, "region": label, "norm": norm})
        return 1.0  # uniform: the sensitivity of the mean is C / m

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        counted = 0

        def counting() -> Iterable[Update]:
            nonlocal counted
            for update in updates:
                counted += 1
                yield update

        averaged = super()._aggregate_arrays(server_round, counting())
        std = self.noise_multiplier * self.clipping_norm / counted
        rng = np.random.default_rng([self.seed, server_round, _NOISE_STREAM])
        noisy = {
            name: (value + rng.normal(0.0, std, size=value.shape)).astype(value.dtype)
            for name, value in averaged.items()
        }
        self._account(counted)
        log(INFO, "DP-FedAvg round %d: %d updates, noise std %.4g", server_round, counted, std)
        return noisy

    # -- accounting ----------------------------------------------------------
    def _make_accountant(self, population: int) -> Any:
        from flwr.supercore.privacy_accounting.rdp_accountant import RdpAccountant

        accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=self.target_delta,
                population_size=population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        if self._accountant_state is not None:
            accountant.load_state_dict(self._accountant_state)
        return accountant

    def _account(self, sample_size: int) -> None:
        population = max(getattr(self, "_population", sample_size), sample_size)
        if self.accountant is None:
            self.accountant = self._make_accountant(population)
        self.accountant.compose(
            GaussianPrivacyEvent(
                noise_multiplier=self.noise_multiplier,
                sample_size=sample_size,
                population_size=self.accountant.config.population_size,
            )
        )

    def privacy_spent(self) -> dict[str, float]:
        """Epsilon at ``target_delta`` after the releases so far (0 releases: epsilon 0)."""
        if self.accountant is None:
            return {"epsilon": 0.0, "delta": self.target_delta, "releases": 0}
        spent = self.accountant.get_privacy_spent()
        return {
            "epsilon": float(spent.epsilon),
            "delta": float(spent.delta),
            "releases": int(spent.num_releases),
            "noise_multiplier": self.noise_multiplier,
            "clipping_norm": self.clipping_norm,
        }

    def report(self) -> dict[str, Any]:
        """What the run's summary.json records for this strategy."""
        return {"privacy": self.privacy_spent(), "clipped_updates": len(self.clipped)}

    # -- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["accountant"] = None if self.accountant is None else self.accountant.state_dict()
        state["clipped"] = [dict(c) for c in self.clipped]
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self._accountant_state = state.get("accountant")
        self.accountant = None
        self.clipped = [dict(c) for c in state.get("clipped", [])]
