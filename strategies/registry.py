"""Strategies by name: ``strategies.get("fedavg", **params)``.

``get`` resolves, Keras-style, a name (case-insensitive), a dict
``{"name": ..., **params}`` (an experiment file's ``[strategy]`` table) or a
Strategy instance (returned as is). The experiment file's ``name = "fedavg"`` and
``get("fedavg")`` in code go through the same table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flwr.serverapp.strategy import Strategy

from .byzantine import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from .dp import DPFedAvg
from .errors import InvalidParameterError, StrategyError, UnknownStrategyError, nearest
from .fedavg import FedAvg
from .fedopt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from .fedprox import FedProx
from .layerwise import FedBN, FedPer, Layerwise

__all__ = ["accepted_params", "available", "get", "register"]

S = TypeVar("S", bound=type[Strategy])

_REGISTRY: dict[str, type[Strategy]] = {}


def register(name: str) -> Callable[[S], S]:
    """Class decorator registering a Strategy subclass under ``name`` (case-insensitive)."""
    key = name.lower()

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise StrategyError(f"register({name!r}): {cls!r} is not a flwr Strategy subclass")
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise StrategyError(
                f"strategy name {key!r} is already registered to {_REGISTRY[key].__qualname__}"
            )
        _REGISTRY[key] = cls
        return cls

    return decorator


def available() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_REGISTRY)


def accepted_params(cls: type) -> list[str]:
    """Keyword parameters ``cls`` accepts, following ``**kwargs`` up the MRO."""
    names: list[str] = []
    fixed: set[str] = set(getattr(cls, "fixed_params", ()))
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        var_kw = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.name != "self" and p.kind is not p.VAR_POSITIONAL and p.name not in names:
                names.append(p.name)
        if not var_kw:
            break
    return [n for n in names if n not in fixed]


def _lookup(name: str) -> type[Strategy]:
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise UnknownStrategyError(name, available()) from None


def get(identifier: str | Mapping[str, Any] | Strategy, **params: Any) -> Strategy:
    """Return a strategy from a name, a ``{"name": ..., **params}`` dict, or an instance.

    Raises:
        UnknownStrategyError: the name is not registered (lists names, suggests one).
        InvalidParameterError: a parameter the strategy does not accept, or a bad value.
        StrategyError: the identifier cannot be interpreted.
    """
    if isinstance(identifier, Strategy):
        if params:
            raise InvalidParameterError(
                f"got a {type(identifier).__name__} instance and parameters "
                f"{sorted(params)}; pass either an instance or a name with parameters"
            )
        return identifier
    if isinstance(identifier, Mapping):
        spec = dict(identifier)
        if "name" not in spec:
            raise StrategyError(
                f"strategy dict needs a 'name' key (one of {', '.join(available())}); "
                f"got keys {sorted(spec)}"
            )
        name = spec.pop("name")
        params = {**spec, **params}
    elif isinstance(identifier, str):
        name = identifier
    else:
        raise StrategyError(
            f"Could not interpret strategy identifier {identifier!r}: expected a name "
            f"({', '.join(available())}), a dict with 'name', or a Strategy instance"
        )
    if not isinstance(name, str):
        raise StrategyError(f"strategy name must be a string, got {name!r}")
    cls = _lookup(name)
    accepted = accepted_params(cls)
    unknown = [p for p in params if p not in accepted]
    if unknown:
        hint = nearest(unknown[0], accepted)
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        raise InvalidParameterError(
            f"strategy {name.lower()!r} does not accept parameter {unknown[0]!r}.{suggestion} "
            f"Accepted parameters: {', '.join(accepted)}"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise InvalidParameterError(
            f"strategy {name.lower()!r}: {exc}. Accepted parameters: {', '.join(accepted)}"
        ) from exc


register("fedavg")(FedAvg)
register("fedprox")(FedProx)
register("dpfedavg")(DPFedAvg)
register("fedavgm")(FedAvgM)
register("fedadagrad")(FedAdagrad)
register("fedadam")(FedAdam)
register("fedyogi")(FedYogi)
register("fedmedian")(FedMedian)
register("fedtrimmedavg")(FedTrimmedAvg)
register("krum")(Krum)
register("multikrum")(MultiKrum)
register("bulyan")(Bulyan)
register("layerwise")(Layerwise)
register("fedper")(FedPer)
register("fedbn")(FedBN)
