"""Per-layer aggregation rules: which variables are averaged, how, and when.

An ordered list of :class:`LayerRule` entries (fnmatch pattern over Keras
variable paths, rule, interval) picks one rule per variable; the first matching
pattern wins and variables matching no rule are averaged by examples (FedAvg,
McMahan et al. 2017). Rules:

- ``weighted``: example-weighted average.
- ``uniform``: unweighted average over clients.
- ``local``: never averaged; each client keeps its own copy (FedPer,
  Arivazhagan et al. 2019; FedBN, Li et al. 2021 for batch-norm layers).
- ``frozen``: the server keeps its value and every client takes it each round.
- ``interval=k`` (weighted/uniform only): the layer is aggregated only on rounds
  divisible by ``k``; in between, clients continue from their own copy (per-layer
  aggregation intervals as in FedLAMA, Lee et al. 2023).
- ``weight=criterion`` (weighted only): how each client's value of the layer is
  weighted, by a named criterion of :data:`strategies.aggregate.CRITERIA`:
  ``num-examples`` (default, FedAvg), ``uniform``, ``inverse-loss`` (``n_k /
  loss_k``) or ``update-norm`` (``n_k * ||x_k - x||`` for this layer); see
  :func:`strategies.aggregate.criterion_weight`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields

from .aggregate import CRITERIA
from .errors import LayerRuleError, nearest

__all__ = ["RULES", "LayerRule", "check_rules", "criteria_of", "parse_rules", "resolve_plan"]

#: Rule names accepted in :class:`LayerRule`.
RULES = ("weighted", "uniform", "local", "frozen")

_SHOWN = 8


@dataclass(frozen=True)
class LayerRule:
    """One ``(pattern, rule, interval, weight)`` entry; see the module docstring."""

    match: str
    rule: str = "weighted"
    interval: int = 1
    weight: str = "num-examples"

    def __post_init__(self) -> None:
        if not isinstance(self.match, str) or not self.match:
            raise LayerRuleError(f"'match' must be a non-empty string, got {self.match!r}")
        if self.rule not in RULES:
            hint = nearest(str(self.rule), RULES)
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise LayerRuleError(
                f"'rule' must be one of {', '.join(RULES)}; got {self.rule!r}.{suggestion}"
            )
        if isinstance(self.interval, bool) or not isinstance(self.interval, int):
            raise LayerRuleError(f"'interval' must be an int >= 1, got {self.interval!r}")
        if self.interval < 1:
            raise LayerRuleError(f"'interval' must be an int >= 1, got {self.interval}")
        if self.interval != 1 and self.rule in ("local", "frozen"):
            raise LayerRuleError(
                f"'interval' applies to weighted/uniform rules only, not {self.rule!r} "
                f"(pattern {self.match!r})"
            )
        if self.weight not in CRITERIA:
            hint = nearest(str(self.weight), CRITERIA)
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise LayerRuleError(
                f"'weight' must be one of {', '.join(CRITERIA)}; got {self.weight!r}.{suggestion}"
            )
        if self.weight != "num-examples" and self.rule != "weighted":
            raise LayerRuleError(
                f"'weight' applies to the weighted rule only, not {self.rule!r} "
                f"(pattern {self.match!r})"
            )

    def matches(self, name: str) -> bool:
        """Whether this rule's fnmatch pattern matches variable ``name`` (case-sensitive)."""
        return fnmatch.fnmatchcase(name, self.match)

    def to_dict(self) -> dict[str, object]:
        """Plain-dict form, as written in an experiment file's ``[[strategy.layers]]``."""
        return {
            "match": self.match,
            "rule": self.rule,
            "interval": self.interval,
            "weight": self.weight,
        }


_KEYS = tuple(f.name for f in fields(LayerRule))


def parse_rules(
    rules: Iterable[Mapping[str, object] | LayerRule],
) -> tuple[LayerRule, ...]:
    """Validate and convert rules given as dicts (from TOML) or :class:`LayerRule`.

    Raises:
        LayerRuleError: naming the index of the bad entry, the key and what is allowed.
    """
    if isinstance(rules, str | bytes | Mapping | LayerRule):
        raise LayerRuleError(
            f"layers must be a list of rules, got a single {type(rules).__name__}; "
            "wrap it in a list"
        )
    parsed = []
    for index, item in enumerate(rules):
        if isinstance(item, LayerRule):
            parsed.append(item)
            continue
        if not isinstance(item, Mapping):
            raise LayerRuleError(
                f"layers[{index}]: expected a dict with keys {', '.join(_KEYS)} or a "
                f"LayerRule, got {type(item).__name__} {item!r}"
            )
        unknown = [k for k in item if k not in _KEYS]
        if unknown:
            hint = nearest(str(unknown[0]), _KEYS)
            suggestion = f" Did you mean {hint!r}?" if hint else ""
            raise LayerRuleError(
                f"layers[{index}]: unknown key {unknown[0]!r}; allowed keys: "
                f"{', '.join(_KEYS)}.{suggestion}"
            )
        if "match" not in item:
            raise LayerRuleError(f"layers[{index}]: missing required key 'match'")
        try:
            parsed.append(LayerRule(**item))  # type: ignore[arg-type]
        except LayerRuleError as exc:
            raise LayerRuleError(f"layers[{index}]: {exc}") from None
    return tuple(parsed)


def check_rules(rules: Sequence[LayerRule], names: Sequence[str]) -> None:
    """Raise :class:`LayerRuleError` if a rule's pattern matches none of ``names``."""
    for index, rule in enumerate(rules):
        if not any(rule.matches(n) for n in names):
            shown = ", ".join(repr(n) for n in list(names)[:_SHOWN])
            more = f" (and {len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
            raise LayerRuleError(
                f"layers[{index}]: pattern {rule.match!r} matches no model variable; "
                f"variables are: {shown}{more}"
            )


def resolve_plan(
    rules: Sequence[LayerRule], names: Sequence[str], server_round: int
) -> tuple[dict[str, str], list[str]]:
    """Resolve rules into this round's aggregation plan.

    Returns:
        ``(plan, local_layers)``: ``plan`` maps every name to "weighted",
        "uniform" or "keep" (the server keeps its value); ``local_layers`` lists,
        in model order, the variables clients keep from their own copy this round
        (``local`` rules and interval-skipped layers; not ``frozen`` ones).

    Raises:
        LayerRuleError: a pattern matches no variable name.
    """
    check_rules(rules, names)
    plan: dict[str, str] = {}
    local: list[str] = []
    for name in names:
        rule = next((r for r in rules if r.matches(name)), None)
        if rule is None:
            plan[name] = "weighted"
        elif rule.rule == "frozen":
            plan[name] = "keep"
        elif rule.rule == "local" or server_round % rule.interval != 0:
            plan[name] = "keep"
            local.append(name)
        else:
            plan[name] = rule.rule
    return plan, local


def criteria_of(rules: Sequence[LayerRule], names: Sequence[str]) -> dict[str, str]:
    """``{name: criterion}`` of every variable aggregated by a ``weighted`` rule.

    Variables matching no rule are weighted by ``num-examples`` (FedAvg); layers
    under uniform, local or frozen rules are left out.
    """
    out: dict[str, str] = {}
    for name in names:
        rule = next((r for r in rules if r.matches(name)), None)
        if rule is None:
            out[name] = "num-examples"
        elif rule.rule == "weighted":
            out[name] = rule.weight
    return out
