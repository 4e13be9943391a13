"""Early stopping: end the run when a pooled metric stops improving.

:class:`EarlyStopping` is a server hook (:mod:`fedglobal.server.callbacks.hooks`):
pass it in ``simulate(..., hooks=[...])``, or set the experiment file's
``[server] early_stopping_*`` keys (:func:`from_config`), which work on every
engine. It runs after the user's hooks, in :class:`~fedglobal.server.callbacks.hooks.RunHooks`,
and its state (best value, its round, rounds waited) is saved in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedglobal.config import ServerConfig
from fedglobal.errors import ConfigError
from fedglobal.server.callbacks.base import StopRun
from fedglobal.server.callbacks.hooks import ServerHook

__all__ = ["HIGHER_IS_BETTER", "EarlyStopping", "from_config"]

#: Metrics where larger is better (EarlyStopping's ``mode="auto"``).
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "r2"})


class EarlyStopping(ServerHook):
    """Stop when a pooled metric has not improved for ``patience`` rounds.

    Args:
        metric: a metric name (``"r2"``, ``"loss"``, ``"accuracy"``...).
        split: ``"test"`` (federated evaluation, all regions pooled),
            ``"server"`` (the held-out set) or ``"train"``.
        patience: rounds without improvement before stopping.
        min_delta: a change smaller than this is not an improvement.
        mode: ``"max"``, ``"min"``, or ``"auto"`` (max for accuracy,
            precision, recall, f1 and r2; min for the rest).
    """

    def __init__(
        self,
        metric: str,
        *,
        split: str = "test",
        patience: int = 3,
        min_delta: float = 0.0,
        mode: str = "auto",
    ) -> None:
        if split not in ("test", "server", "train"):
            raise ConfigError(
                f"EarlyStopping split = {split!r}; choose 'test', 'server' or 'train'"
            )
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"EarlyStopping mode = {mode!r}; choose 'auto', 'min' or 'max'")
        if patience < 1:
            raise ConfigError(f"EarlyStopping patience = {patience}; it must be >= 1")
        if min_delta < 0:
            raise ConfigError(f"EarlyStopping min_delta = {min_delta}; it must be >= 0")
        self.metric = metric.lower()
        self.split = split
        self.patience = patience
        self.min_delta = float(min_delta)
        self.mode = mode
        self.maximize = self.metric in HIGHER_IS_BETTER if mode == "auto" else mode == "max"
        self.best: float | None = None
        self.best_round = 0
        self.waited = 0

    @property
    def key(self) -> str:
        """The metric's key in ``on_round_end``'s metrics (``split/metric``)."""
        return f"{self.split}/{self.metric}"

    def on_round_end(self, server_round: int, metrics: Mapping[str, float]) -> None:
        if self.key not in metrics:
            known = ", ".join(sorted(metrics)) or "none"
            raise ConfigError(
                f"early stopping watches {self.key!r}, which this run does not record "
                f"(round {server_round} has: {known})"
            )
        value = float(metrics[self.key])
        if self.best is None or self._improved(value):
            self.best, self.best_round, self.waited = value, server_round, 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            direction = "increase" if self.maximize else "decrease"
            raise StopRun(
                f"{self.split} {self.metric} did not {direction} by more than {self.min_delta:g} "
                f"for {self.patience} round(s); best {self.best:.6g} at round {self.best_round}",
                hook="EarlyStopping",
            )

    def state_dict(self) -> dict[str, Any]:
        """What it carries between rounds (saved in checkpoints)."""
        return {"best": self.best, "best_round": self.best_round, "waited": self.waited}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` (on resume)."""
        best = state["best"]
        self.best = None if best is None else float(best)
        self.best_round, self.waited = int(state["best_round"]), int(state["waited"])

    def _improved(self, value: float) -> bool:
        assert self.best is not None
        if math.isnan(value):
            return False
        if math.isnan(self.best):
            return True
        if self.maximize:
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def __repr__(self) -> str:
        return (
            f"EarlyStopping({self.metric!r}, split={self.split!r}, patience={self.patience}, "
            f"min_delta={self.min_delta}, mode={self.mode!r})"
        )


def from_config(server: ServerConfig) -> EarlyStopping | None:
    """The early stopping the ``[server]`` section asks for, or None."""
    if not server.early_stopping_metric:
        return None
    return EarlyStopping(
        server.early_stopping_metric,
        split=server.early_stopping_split,
        patience=server.early_stopping_patience,
        min_delta=server.early_stopping_min_delta,
        mode=server.early_stopping_mode,
    )
