"""Byzantine-robust strategies: FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan.

Thin FedAvg subclasses over :mod:`strategies.robust`: they keep FedAvg's seeded
sampling, reply checks and rejection log, then aggregate the accepted updates
with a robust rule instead of the weighted mean.

- :class:`FedMedian` and :class:`FedTrimmedAvg`: Yin et al. 2018,
  "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates".
- :class:`Krum` and :class:`MultiKrum`: Blanchard et al. 2017, "Machine Learning
  with Adversaries: Byzantine Tolerant Gradient Descent".
- :class:`Bulyan`: El Mhamdi et al. 2018, "The Hidden Vulnerability of
  Distributed Learning in Byzantium".

These rules need every update of the round at once: memory is O(clients x
model), where FedAvg streams in O(model).

Preconditions on the number of clients ``n`` for ``f = num_malicious`` are
checked twice, with a :class:`~strategies.errors.PreconditionError` naming the
rule, ``n`` and ``f``: in the constructor against ``min_train_clients`` (which
defaults to the rule's minimum), and at aggregation against the accepted
replies (failed, rejected or dropped replies lower ``n``).

Flower's FedMedian/FedTrimmedAvg/Krum/MultiKrum/Bulyan are not subclassed: they
``pop`` arrays out of the replies, skip fedglobal's reply checks, and Flower's
Bulyan selects with one Multi-Krum pass rather than the paper's recursive Krum.
Tests check these rules against Flower's helpers where the two agree.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.supercore import log

from . import robust
from .aggregate import Update, check_count
from .errors import InvalidParameterError
from .fedavg import FedAvg

__all__ = ["Bulyan", "FedMedian", "FedTrimmedAvg", "Krum", "MultiKrum"]


def _malicious(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InvalidParameterError(f"num_malicious must be an int >= 0, got {value!r}")
    return int(value)


class _Robust(FedAvg):
    """FedAvg with a robust aggregation rule; see the module docstring."""

    #: The rule's registry name, used in errors.
    rule = ""

    def __init__(
        self, *, num_malicious: int = 0, min_train_clients: int | None = None, **kwargs: Any
    ) -> None:
        f = _malicious(num_malicious)
        if min_train_clients is None:
            n = max(2, robust.min_clients(self.rule, f))
        else:
            n = check_count("min_train_clients", min_train_clients)
            robust.check_clients(self.rule, n, f, where="(min_train_clients)")
        super().__init__(min_train_clients=n, **kwargs)
        self._params["min_train_clients"] = min_train_clients
        self.num_malicious = f
        self.selections: list[dict[str, Any]] = []

    def _check_replies(self, server_round: int, n: int) -> None:
        robust.check_clients(
            self.rule, n, self.num_malicious, where=f"accepted replies in round {server_round}"
        )

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        items = list(updates)
        self._check_replies(server_round, len(items))
        return self._robust(server_round, items)

    def _robust(self, server_round: int, items: list[Update]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _select(self, server_round: int, selected: list[str]) -> None:
        self.selections.append({"round": server_round, "selected": list(selected)})
        log(INFO, "%s round %d: selected %s", self.rule, server_round, ", ".join(selected))

    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus ``"selections"`` (the clients Krum-like rules kept)."""
        return {**super().state_dict(), "selections": [dict(s) for s in self.selections]}

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.selections = [dict(s) for s in state["selections"]]


class FedMedian(_Robust):
    """Coordinate-wise median of the accepted updates (Yin et al. 2018).

    Unweighted; robust while fewer than half of the clients are arbitrary.

    Args:
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.
    """

    rule = "fedmedian"
    fixed_params = ("num_malicious",)

    def __init__(self, **kwargs: Any) -> None:
        if "num_malicious" in kwargs:
            raise InvalidParameterError("fedmedian takes no num_malicious")
        super().__init__(**kwargs)

    def _robust(self, server_round: int, items: list[Update]) -> dict[str, np.ndarray]:
        return robust.coordinate_median(items, reference=self._reference, validate=False)


class FedTrimmedAvg(_Robust):
    """Coordinate-wise trimmed mean (Yin et al. 2018).

    Per coordinate, the ``floor(beta * n)`` largest and smallest client values are
    dropped and the rest averaged (unweighted).

    Args:
        beta: fraction trimmed from each end, in [0, 0.5).
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.
    """

    rule = "fedtrimmedavg"
    fixed_params = ("num_malicious",)

    def __init__(self, *, beta: float = 0.2, **kwargs: Any) -> None:
        if "num_malicious" in kwargs:
            raise InvalidParameterError("fedtrimmedavg takes no num_malicious; set beta")
        if (
            isinstance(beta, bool)
            or not isinstance(beta, numbers.Real)
            or not 0.0 <= float(beta) < 0.5
        ):
            raise InvalidParameterError(f"fedtrimmedavg: beta must be in [0, 0.5), got {beta!r}")
        super().__init__(**kwargs)
        self.beta = float(beta)
        self._params["beta"] = beta

    def _robust(self, server_round: int, items: list[Update]) -> dict[str, np.ndarray]:
        return robust.trimmed_mean(items, beta=self.beta, reference=self._reference, validate=False)


class MultiKrum(_Robust):
    """Multi-Krum (Blanchard et al. 2017).

    Scores each update by the sum of squared distances to its ``n - f - 2``
    nearest others, keeps the ``num_selected`` lowest scores and averages them by
    example counts. Needs ``n >= 2f + 3``.

    Args:
        num_malicious: ``f``, the number of Byzantine clients tolerated.
        num_selected: ``m``, updates kept per round; default ``n - f``.
        min_train_clients: default ``2f + 3``; a smaller value is an error.
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.

    Attributes:
        selections: per round, the regions whose updates were kept.
    """

    rule = "multikrum"

    def __init__(
        self, *, num_malicious: int = 1, num_selected: int | None = None, **kwargs: Any
    ) -> None:
        if num_selected is not None and (
            isinstance(num_selected, bool)
            or not isinstance(num_selected, numbers.Integral)
            or num_selected < 1
        ):
            raise InvalidParameterError(
                f"{self.rule}: num_selected must be an int >= 1 or omitted, got {num_selected!r}"
            )
        super().__init__(num_malicious=num_malicious, **kwargs)
        self.num_selected = num_selected
        self._params["num_malicious"] = num_malicious
        self._params["num_selected"] = num_selected

    def _robust(self, server_round: int, items: list[Update]) -> dict[str, np.ndarray]:
        arrays, selected = robust.multikrum(
            items,
            f=self.num_malicious,
            m=self.num_selected,
            reference=self._reference,
            validate=False,
        )
        self._select(server_round, selected)
        return arrays


class Krum(MultiKrum):
    """Krum (Blanchard et al. 2017): the single update with the lowest Krum score.

    Needs ``n >= 2f + 3``.

    Args:
        num_malicious: ``f``, the number of Byzantine clients tolerated.
        min_train_clients: default ``2f + 3``; a smaller value is an error.
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.
    """

    rule = "krum"
    fixed_params = ("num_selected",)

    def __init__(self, *, num_malicious: int = 1, **kwargs: Any) -> None:
        if "num_selected" in kwargs:
            raise InvalidParameterError("krum selects one update; use multikrum for num_selected")
        super().__init__(num_malicious=num_malicious, num_selected=1, **kwargs)
        del self._params["num_selected"]


class Bulyan(_Robust):
    """Bulyan over Krum (El Mhamdi et al. 2018).

    Selects ``theta = n - 2f`` updates by recursive Krum, then per coordinate
    averages the ``theta - 2f`` selected values closest to their median. Needs
    ``n >= 4f + 3``.

    Args:
        num_malicious: ``f``, the number of Byzantine clients tolerated.
        min_train_clients: default ``4f + 3``; a smaller value is an error.
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.

    Attributes:
        selections: per round, the regions Krum selected.
    """

    rule = "bulyan"

    def __init__(self, *, num_malicious: int = 1, **kwargs: Any) -> None:
        super().__init__(num_malicious=num_malicious, **kwargs)
        self._params["num_malicious"] = num_malicious

    def _robust(self, server_round: int, items: list[Update]) -> dict[str, np.ndarray]:
        arrays, selected = robust.bulyan(
            items, f=self.num_malicious, reference=self._reference, validate=False
        )
        self._select(server_round, selected)
        return arrays
