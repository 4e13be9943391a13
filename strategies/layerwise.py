"""Layerwise averaging: a rule per variable, plus FedPer and FedBN presets.

Each variable is aggregated by the first matching :class:`LayerRule` (see
:mod:`strategies.layer_rules`): weighted (FedAvg, McMahan et al. 2017), uniform,
local (FedPer, Arivazhagan et al. 2019; FedBN, Li et al. 2021), frozen, and with
a per-layer aggregation interval (FedLAMA, Lee et al. 2023). A weighted rule may
weight clients per layer by a named criterion (``weight = "inverse-loss"``...,
see :func:`strategies.aggregate.criterion_weight`).

The interval schedule is a pure function of the round number (a layer with
interval ``k`` is aggregated on rounds divisible by ``k``), so there is no
counter to save: ``state_dict()`` is FedAvg's.

Each round the train and evaluate configs carry ``"local-layers"``: the variable
names each client must keep from its own copy instead of the server's value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from .aggregate import Update, aggregate_layerwise, layer_weights
from .errors import InvalidParameterError, LayerRuleError
from .fedavg import METRICS_KEY, FedAvg
from .layer_rules import LayerRule, check_rules, criteria_of, parse_rules, resolve_plan

__all__ = ["LOCAL_LAYERS_KEY", "FedBN", "FedPer", "Layerwise"]

#: Config key listing the variables clients keep from their own copy this round.
LOCAL_LAYERS_KEY = "local-layers"


class Layerwise(FedAvg):
    """FedAvg with per-layer rules (first matching pattern wins).

    Rules: weighted (FedAvg, McMahan et al. 2017) with an optional per-layer
    weighting criterion, uniform, local (FedPer, Arivazhagan et al. 2019; FedBN,
    Li et al. 2021), frozen, and per-layer aggregation intervals (FedLAMA, Lee et
    al. 2023); see :mod:`strategies.layer_rules`.

    Args:
        layers: ordered rules, as dicts ``{"match", "rule", "interval", "weight"}``
            (the experiment file's ``[[strategy.layers]]``) or :class:`LayerRule`.
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.

    Call :meth:`bind` with the model's variable names to check the rules up front;
    otherwise the first ``configure_train`` binds to the names of its arrays.
    """

    def __init__(self, *, layers: Sequence[Mapping[str, Any] | LayerRule] = (), **kwargs: Any):
        super().__init__(**kwargs)
        self.rules: tuple[LayerRule, ...] = parse_rules(layers)
        self.names: tuple[str, ...] | None = None
        self.criteria: dict[str, str] = {}
        self._current: dict[str, np.ndarray] | None = None

    def get_config(self) -> dict[str, Any]:
        """Constructor parameters, rules as plain dicts."""
        return {**super().get_config(), "layers": [r.to_dict() for r in self.rules]}

    def bind(self, names: Sequence[str]) -> Layerwise:
        """Fix the model's variable names; raise LayerRuleError if a rule matches none."""
        names = tuple(names)
        check_rules(self.rules, names)
        self.names = names
        self.criteria = criteria_of(self.rules, names)
        return self

    def plan(self, server_round: int) -> tuple[dict[str, str], list[str]]:
        """``(plan, local_layers)`` for ``server_round``; see ``resolve_plan``."""
        if self.names is None:
            raise LayerRuleError("Layerwise strategy is not bound: call bind(variable_names)")
        return resolve_plan(self.rules, self.names, server_round)

    def _bind_to(self, arrays: ArrayRecord) -> None:
        names = tuple(arrays.keys())
        if self.names is None:
            self.bind(names)
        elif names != self.names:
            missing = sorted(set(self.names) - set(names))[:5]
            extra = sorted(set(names) - set(self.names))[:5]
            raise LayerRuleError(
                f"arrays do not match the bound variable names: missing {missing}, "
                f"unexpected {extra} (order must match too)"
            )

    def _round_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        out = super()._round_config(config, server_round)
        out[LOCAL_LAYERS_KEY] = self.plan(server_round)[1]
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """As FedAvg, binding to the arrays' names and adding ``local-layers``."""
        self._bind_to(arrays)
        return super().configure_train(server_round, arrays, config, grid)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """As FedAvg, adding ``local-layers`` (clients evaluate their personal layers)."""
        self._bind_to(arrays)
        return super().configure_evaluate(server_round, arrays, config, grid)

    def _remember(self, server_round: int, arrays: ArrayRecord) -> None:
        super()._remember(server_round, arrays)
        self._current = {name: array.numpy() for name, array in arrays.items()}

    def _finite_layers(self, server_round: int) -> Iterable[str] | None:
        plan, _ = self.plan(server_round)
        return [name for name, mode in plan.items() if mode != "keep"]

    def _update_weight(
        self,
        server_round: int,
        content: RecordDict,
        label: str,
        arrays: dict[str, np.ndarray],
        weight: float,
    ) -> float | dict[str, float]:
        """Per-layer weights when a weighted rule names a criterion other than num-examples."""
        if all(c == "num-examples" for c in self.criteria.values()):
            return weight
        plan, _ = self.plan(server_round)
        criteria = {n: c for n, c in self.criteria.items() if plan[n] == "weighted"}
        metrics = content.get(METRICS_KEY)
        loss = metrics.get("loss") if isinstance(metrics, MetricRecord) else None
        return layer_weights(
            criteria,
            arrays,
            client=label,
            num_examples=weight,
            loss=loss,
            current=self._current,
        )

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        if self._current is None:
            raise LayerRuleError("aggregate_train before configure_train: no current arrays")
        plan, _ = self.plan(server_round)
        return aggregate_layerwise(updates, current=self._current, plan=plan, validate=False)


def _no_layers(cls: type, kwargs: Mapping[str, Any]) -> None:
    if "layers" in kwargs:
        raise InvalidParameterError(
            f"{cls.__name__} sets its own layer rules; use Layerwise for custom 'layers'"
        )


class FedPer(Layerwise):
    """FedPer (Arivazhagan et al. 2019): the head layers stay local to each client.

    Args:
        head: fnmatch pattern of the personal (local) variables.
    """

    #: Parameters of the parents that this preset sets itself.
    fixed_params = ("layers",)

    def __init__(self, *, head: str = "*output*", **kwargs: Any):
        _no_layers(type(self), kwargs)
        super().__init__(layers=[LayerRule(head, "local")], **kwargs)
        self.head = head

    def get_config(self) -> dict[str, Any]:
        """Constructor parameters."""
        config = super().get_config()
        del config["layers"]
        return {**config, "head": self.head}


class FedBN(Layerwise):
    """FedBN (Li et al. 2021): batch-normalisation variables stay local to each client.

    Args:
        pattern: fnmatch pattern of the batch-normalisation variables.
    """

    fixed_params = ("layers",)

    def __init__(self, *, pattern: str = "*batch_normalization*", **kwargs: Any):
        _no_layers(type(self), kwargs)
        super().__init__(layers=[LayerRule(pattern, "local")], **kwargs)
        self.pattern = pattern

    def get_config(self) -> dict[str, Any]:
        """Constructor parameters."""
        config = super().get_config()
        del config["layers"]
        return {**config, "pattern": self.pattern}
