"""What the ServerApp asks of a strategy beyond Flower's ``Strategy``: one declared interface.

Flower's :class:`flwr.serverapp.strategy.Strategy` is the contract of a round
(``configure_train``, ``aggregate_train``, ...). Around the rounds the ServerApp
needs a few more answers: how many regions a round needs, the logs of what was
rejected, failed or dropped, a strategy's own summary fields, its layer plan and
its state for checkpoints. They are declared here as small protocols, each
optional; :func:`view` answers them for any strategy, with Flower's defaults where
a strategy (say, a user's ``Strategy`` subclass) does not implement one. The
catalogue's strategies (:class:`strategies.FedAvg` and its subclasses) implement
all but :class:`Layered`, which :class:`strategies.Layerwise` adds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Grouped",
    "Layered",
    "Logged",
    "Needs",
    "Personal",
    "Reporting",
    "Stateful",
    "StrategyView",
    "view",
]


@runtime_checkable
class Stateful(Protocol):
    """Carries state between rounds that a checkpoint saves and a resume restores."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Logged(Protocol):
    """Keeps logs of rejected updates, failed replies and dropped stragglers (lists of dicts)."""

    rejected: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    dropped: list[dict[str, Any]]


@runtime_checkable
class Reporting(Protocol):
    """Adds its own fields to ``summary.json`` (say, DP's privacy spent)."""

    def report(self) -> dict[str, Any]: ...


@runtime_checkable
class Layered(Protocol):
    """Aggregates by variable: binds its rules to the model's variable paths, and plans
    each round's rule per variable and the variables each region keeps to itself."""

    def bind(self, names: Sequence[str]) -> Any: ...

    def plan(self, server_round: int) -> tuple[dict[str, str], list[str]]: ...


@runtime_checkable
class Personal(Protocol):
    """Keeps a whole personal model in each region (Ditto): the variables it holds."""

    def personal_variables(self) -> list[str]: ...


@runtime_checkable
class Grouped(Protocol):
    """Aggregates in groups of regions (hierarchical FL): told each region's group."""

    def set_groups(self, groups: Mapping[str, str]) -> None: ...


@dataclass(frozen=True)
class Needs:
    """How many regions the strategy needs (Flower's FedAvg attributes; 0 or 1 if absent)."""

    min_available_nodes: int = 1
    min_train_nodes: int = 0
    min_evaluate_nodes: int = 0
    fraction_train: float = 1.0
    fraction_evaluate: float = 1.0
    #: Byzantine-robust rules: the number of malicious regions tolerated, if any.
    num_malicious: int | None = None
    #: Replies with partial work (stragglers) are dropped rather than aggregated.
    drop_stragglers: bool = False
    #: Local compute per step relative to one model's (Ditto trains two: 2.0).
    local_work: float = 1.0


class StrategyView:
    """The ServerApp's questions to ``strategy``, answered the same way for every strategy."""

    def __init__(self, strategy: Any) -> None:
        self.strategy = strategy
        defaults = Needs()
        malicious = getattr(strategy, "num_malicious", None)
        self.needs = Needs(
            **{
                name: type(getattr(defaults, name))(
                    getattr(strategy, name, getattr(defaults, name))
                )
                for name in (
                    "min_available_nodes",
                    "min_train_nodes",
                    "min_evaluate_nodes",
                    "fraction_train",
                    "fraction_evaluate",
                )
            },
            num_malicious=None if malicious is None else int(malicious),
            drop_stragglers=bool(getattr(strategy, "drop_stragglers", False)),
            local_work=float(getattr(strategy, "local_work", 1.0)),
        )

    @property
    def layered(self) -> bool:
        return isinstance(self.strategy, Layered)

    @property
    def asynchronous(self) -> bool:
        """Steps on arrivals on the simulated clock (fedbuff, fedasync), not in rounds."""
        return bool(getattr(self.strategy, "asynchronous", False))

    @property
    def grouped(self) -> bool:
        return isinstance(self.strategy, Grouped)

    @property
    def stateful(self) -> bool:
        return isinstance(self.strategy, Stateful)

    def bind(self, names: Sequence[str]) -> None:
        """Bind a layered strategy's rules to the model's variables (others: nothing)."""
        if self.layered:
            self.strategy.bind(list(names))

    def local_layers(self, server_round: int) -> list[str]:
        """The variables regions keep to themselves in ``server_round``: a layered strategy's
        local layers, or a personal-model strategy's whole model (none otherwise)."""
        local = list(self.strategy.plan(max(1, server_round))[1]) if self.layered else []
        if not local and isinstance(self.strategy, Personal):
            local = list(self.strategy.personal_variables())
        return local

    def summary(self) -> None:
        """Log the strategy's configuration, if it can."""
        summary = getattr(self.strategy, "summary", None)
        if callable(summary):
            summary()

    def outcomes(self) -> dict[str, Any]:
        """``summary.json``'s fields from the strategy: its logs and its own report."""
        logs = self.strategy if isinstance(self.strategy, Logged) else None
        out: dict[str, Any] = {
            "rejected_updates": list(logs.rejected) if logs else [],
            "failed_replies": list(logs.failures) if logs else [],
            "dropped_stragglers": list(logs.dropped) if logs else [],
        }
        if isinstance(self.strategy, Reporting):
            out.update(self.strategy.report())
        return out


def view(strategy: Any) -> StrategyView:
    """The ServerApp's view of ``strategy`` (see the module docstring)."""
    return strategy if isinstance(strategy, StrategyView) else StrategyView(strategy)
