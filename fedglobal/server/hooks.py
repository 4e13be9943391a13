"""Server-side hooks: code of yours that runs on the server at the end of every round.

>>> import fedglobal
>>> from fedglobal.server.hooks import EarlyStopping, ServerHook
>>> class Print(ServerHook):
...     def on_round_end(self, server_round, metrics):
...         print(server_round, metrics["test/loss"])
>>> fedglobal.simulate("experiments/quickstart.toml",
...                    hooks=[Print(), EarlyStopping("r2", patience=2)])  # doctest: +SKIP

A hook may implement any of:

- ``evaluate(server_round, model)``: server-side evaluation. ``model`` is a
  ``keras.Model`` holding the round's global weights; return a mapping of
  metric names to numbers. They are recorded in the history with split
  ``server`` and region ``all``.
- ``on_round_end(server_round, metrics)``: called after every round (1, 2, ...)
  with the pooled metrics of the round as a flat dict: ``"train/loss"``,
  ``"test/r2"``, ``"server/accuracy"``... Raise :class:`StopRun` to end the
  run cleanly after this round; the reason is recorded in summary.json.
- ``on_run_end(summary)``: called once, with the run's summary dict, after
  the run folder is written.

A plain function is taken as ``on_round_end``.

Hooks are Python objects. They run where the ServerApp runs, so they work
with the ``inprocess`` engine only (``simulate(..., hooks=...)``); on the
``ray`` and ``deployment`` engines the ServerApp is another process. The
experiment file's ``[server]`` section (held-out ``eval_source`` and
``early_stopping_*`` keys) works on every engine.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from fedglobal.errors import ConfigError

__all__ = [
    "EarlyStopping",
    "FunctionHook",
    "ServerHook",
    "StopRun",
    "active",
    "as_hooks",
    "current",
]

#: Metrics where larger is better (EarlyStopping's ``mode="auto"``).
HIGHER_IS_BETTER = frozenset({"accuracy", "precision", "recall", "f1", "r2"})


class StopRun(Exception):  # a control-flow signal, like StopIteration
    """Raised by a hook's ``on_round_end`` to stop the run cleanly after this round."""

    def __init__(self, reason: str, *, hook: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hook = hook


class ServerHook:
    """Base class of server-side hooks; override the methods you need."""

    def evaluate(self, server_round: int, model: Any) -> Mapping[str, float] | None:
        """Server-side metrics of the round's global ``model``, or None."""
        return None

    def on_round_end(self, server_round: int, metrics: Mapping[str, float]) -> None:
        """Called after each round with its pooled metrics; may raise StopRun."""

    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        """Called once the run folder is written."""


class FunctionHook(ServerHook):
    """A plain function ``fn(server_round, metrics)`` used as ``on_round_end``."""

    def __init__(self, fn: Callable[[int, Mapping[str, float]], Any]) -> None:
        self.fn = fn

    def on_round_end(self, server_round: int, metrics: Mapping[str, float]) -> None:
        self.fn(server_round, metrics)

    def __repr__(self) -> str:
        return f"FunctionHook({getattr(self.fn, '__name__', self.fn)!r})"


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


def as_hooks(hooks: ServerHook | Callable | Sequence[ServerHook | Callable] | None) -> list:
    """Normalise ``hooks`` to a list of ServerHook objects (functions are wrapped)."""
    if hooks is None:
        return []
    if isinstance(hooks, ServerHook) or callable(hooks):
        hooks = [hooks]
    out: list[ServerHook] = []
    for hook in hooks:
        if isinstance(hook, ServerHook):
            out.append(hook)
        elif callable(hook):
            out.append(FunctionHook(hook))
        else:
            raise ConfigError(
                f"a server hook must be a ServerHook or a function(round, metrics), "
                f"got {type(hook).__name__}"
            )
    return out


_lock = threading.Lock()
_active: list[list[ServerHook]] = []


@contextlib.contextmanager
def active(hooks: Sequence[ServerHook]) -> Iterator[None]:
    """Make ``hooks`` visible to a ServerApp running in this process (see :func:`current`)."""
    with _lock:
        _active.append(list(hooks))
    try:
        yield
    finally:
        with _lock:
            _active.pop()


def current() -> list[ServerHook]:
    """The hooks of the innermost :func:`active` block in this process ([] if none)."""
    with _lock:
        return list(_active[-1]) if _active else []
