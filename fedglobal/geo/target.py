"""A target such as ``"r2 >= 0.8"``: the simulated time at which a run first reaches it.

The metric is a pooled metric of the ``test`` split (the history's region
``all``), or of another split when written ``server:r2 >= 0.8``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

__all__ = ["METRICS", "Target", "TargetError"]

METRICS = ("loss", "accuracy", "precision", "recall", "f1", "mae", "rmse", "r2")
_SPLITS = ("test", "server", "train")
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_TARGET = re.compile(
    r"^\s*(?:(?P<split>[a-z]+):)?(?P<metric>[a-z0-9_]+)\s*(?P<op>>=|<=|>|<)\s*"
    r"(?P<value>[-+0-9.eE]+)\s*$"
)


class TargetError(ValueError):
    """A target that cannot be read (the message says what is allowed)."""


@dataclass(frozen=True)
class Target:
    """``metric op value`` over the pooled metric of ``split``."""

    metric: str
    op: str
    value: float
    split: str = "test"

    @classmethod
    def parse(cls, text: str) -> Target:
        match = _TARGET.match(str(text))
        if not match:
            raise TargetError(
                f"{text!r} is not a target like 'r2 >= 0.8' (metric, one of >= > <= <, a number)"
            )
        split = match["split"] or "test"
        problems = []
        if split not in _SPLITS:
            problems.append(f"split {split!r} (allowed: {', '.join(_SPLITS)})")
        if match["metric"] not in METRICS:
            problems.append(f"metric {match['metric']!r} (allowed: {', '.join(METRICS)})")
        try:
            value = float(match["value"])
        except ValueError:
            problems.append(f"value {match['value']!r} (a number)")
            value = 0.0
        if problems:
            raise TargetError(f"{text!r}: unknown " + "; ".join(problems))
        return cls(match["metric"], match["op"], value, split)

    def __str__(self) -> str:
        prefix = "" if self.split == "test" else f"{self.split}:"
        return f"{prefix}{self.metric} {self.op} {self.value:g}"

    def met(self, value: float) -> bool:
        return bool(_OPS[self.op](value, self.value))

    def first_round(self, history: pd.DataFrame) -> int | None:
        """The first round (> 0) whose pooled metric meets the target, else None."""
        rows = history[
            (history["region"] == "all")
            & (history["split"] == self.split)
            & (history["metric"] == self.metric)
            & (history["round"] > 0)
        ].sort_values("round")
        for server_round, value in zip(rows["round"], rows["value"], strict=True):
            if self.met(float(value)):
                return int(server_round)
        return None

    def time_to(self, history: pd.DataFrame, end_s: Mapping[int, float]) -> float | None:
        """The simulated end of the first round that meets the target (None: never)."""
        first = self.first_round(history)
        return None if first is None else float(end_s[first])
