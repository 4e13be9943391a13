"""Typed errors raised by the strategies package.

Every error is a ``ValueError`` (through :class:`StrategyError`) so callers that
only know "bad value" still catch them, while tests and the server can match the
precise type. Aggregation errors carry the client label and the layer name.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

__all__ = [
    "AggregationError",
    "DtypeMismatchError",
    "InvalidParameterError",
    "InvalidWeightError",
    "KeyMismatchError",
    "LayerRuleError",
    "NonFiniteError",
    "NotEnoughClientsError",
    "PreconditionError",
    "ShapeMismatchError",
    "StateDictError",
    "StrategyError",
    "UnknownStrategyError",
    "ZeroTotalWeightError",
    "nearest",
]


def nearest(word: str, choices: Iterable[str]) -> str | None:
    """Return the closest match to ``word`` among ``choices`` (difflib), or None."""
    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return found[0] if found else None


class StrategyError(ValueError):
    """Base class of every error raised by ``strategies``."""


class InvalidParameterError(StrategyError):
    """A strategy parameter has a bad value or is not accepted by the strategy."""


class AggregationError(StrategyError):
    """A client update cannot be aggregated.

    Attributes:
        client: label of the offending client (its region), or None if the
            error concerns the whole round.
        layer: variable name of the offending layer, or None if not layer-specific.
        reason: the explanation without the client/layer prefix.
    """

    def __init__(self, reason: str, *, client: str | None = None, layer: str | None = None):
        self.client = client
        self.layer = layer
        self.reason = reason
        where = []
        if client is not None:
            where.append(f"client {client!r}")
        if layer is not None:
            where.append(f"layer {layer!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {reason}" if prefix else reason)


class KeyMismatchError(AggregationError):
    """An update is missing variables or carries unexpected ones."""


class ShapeMismatchError(AggregationError):
    """An array has a different shape from the reference."""


class DtypeMismatchError(AggregationError):
    """An array has a different dtype kind (float/int/...) from the reference."""


class NonFiniteError(AggregationError):
    """An array contains NaN or infinite values."""


class InvalidWeightError(AggregationError):
    """A client's weight (num-examples) is non-numeric, non-finite, negative or zero."""


class ZeroTotalWeightError(AggregationError):
    """The weights of a round do not sum to a positive number."""


class UnknownStrategyError(StrategyError):
    """A strategy name is not in the registry."""

    def __init__(self, name: str, known: Sequence[str]):
        self.name = name
        self.known = list(known)
        self.suggestion = nearest(name.lower(), self.known)
        hint = f" Did you mean {self.suggestion!r}?" if self.suggestion else ""
        super().__init__(
            f"Unknown strategy {name!r}. Known strategies: {', '.join(self.known)}.{hint}"
        )


class LayerRuleError(StrategyError):
    """A layer rule is malformed or does not fit the model's variable names."""


class NotEnoughClientsError(StrategyError):
    """Fewer clients connected than required, after waiting ``waited`` seconds."""

    def __init__(self, required: int, connected: int, waited: float):
        self.required = required
        self.connected = connected
        self.waited = waited
        super().__init__(
            f"Not enough clients: {required} required, {connected} connected "
            f"after waiting {waited:g}s (wait_timeout)."
        )


class PreconditionError(StrategyError):
    """A robust rule's precondition on the number of clients does not hold.

    Raised by the constructor (against ``min_train_clients``) and at aggregation
    time (against the number of accepted replies).

    Attributes:
        rule: the rule's registry name (``"krum"``, ``"bulyan"``...).
        n: the number of clients the check was made against.
        f: the assumed number of malicious clients (``num_malicious``).
        required: the smallest ``n`` the rule accepts for this ``f``.
    """

    def __init__(self, rule: str, *, n: int, f: int, required: int, condition: str, where: str):
        self.rule = rule
        self.n = n
        self.f = f
        self.required = required
        super().__init__(
            f"{rule}: needs {condition}, i.e. at least {required} clients for f = {f} "
            f"malicious; got n = {n} {where}"
        )


class StateDictError(StrategyError):
    """A state dict does not fit the strategy it is loaded into."""
