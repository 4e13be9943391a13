"""Server-side hooks: code of yours that runs on the server at the end of every round.

>>> import fedglobal
>>> from fedglobal.server.callbacks import EarlyStopping, ServerHook
>>> class Print(ServerHook):
...     def on_round_end(self, server_round, metrics):
...         print(server_round, metrics["test/loss"])
>>> fedglobal.simulate("experiments/quickstart.toml",
...                    hooks=[Print(), EarlyStopping("r2", patience=2)])  # doctest: +SKIP

A hook may implement any of:

- ``evaluate(server_round, model)``: server-side evaluation. ``model`` is a
  ``keras.Model`` holding the round's global weights; return a mapping of
  metric names to numbers. They are recorded in the history with split
  ``server`` and region ``all`` (:mod:`fedglobal.server.callbacks.evaluation`).
- ``on_round_end(server_round, metrics)``: called after every round (1, 2, ...)
  with the pooled metrics of the round as a flat dict: ``"train/loss"``,
  ``"test/r2"``, ``"server/accuracy"``... Raise :class:`StopRun` to end the
  run cleanly after this round; the reason is recorded in summary.json.
- ``on_run_end(summary)``: called once, with the run's summary dict, after
  the run folder is written.

A plain function is taken as ``on_round_end``. :class:`RunHooks` is the
round-end job that calls them, in the order given.

Hooks are Python objects. They run where the ServerApp runs, so they work
with the ``inprocess`` engine only (``simulate(..., hooks=...)``); on the
``ray`` and ``deployment`` engines the ServerApp is another process. The
experiment file's ``[server]`` section (held-out ``eval_source`` and
``early_stopping_*`` keys) works on every engine.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from fedglobal.errors import ConfigError
from fedglobal.server.callbacks.base import RoundCallback, RoundOutcome, StopRun
from fedglobal.server.history import HistoryRecorder

__all__ = [
    "FunctionHook",
    "RunHooks",
    "ServerHook",
    "StopRun",
    "active",
    "as_hooks",
    "current",
]


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


class RunHooks(RoundCallback):
    """Calls the hooks' ``on_round_end`` after each round (1, 2, ...) and ``on_run_end`` last.

    The first hook that raises :class:`StopRun` stops the run (the hooks after
    it do not see that round). Saves the state of every hook that has a
    ``state_dict()`` (early stopping) under ``"hooks"``, by class name.

    Args:
        recorder: the run's history (the round's pooled metrics).
        hooks: the run's hooks; :class:`~fedglobal.server.callbacks.evaluation.ServerEvaluation`
            shares the list (and puts the held-out evaluation first).
    """

    def __init__(self, recorder: HistoryRecorder, hooks: list[ServerHook]) -> None:
        self.recorder = recorder
        self.hooks = hooks

    def after_round(
        self, server_round: int, weights: Mapping[str, np.ndarray], metrics: Mapping[str, float]
    ) -> RoundOutcome | None:
        if server_round <= 0:
            return None
        pooled = self.recorder.pooled(server_round)
        for hook in self.hooks:
            try:
                hook.on_round_end(server_round, pooled)
            except StopRun as stop:
                if not stop.hook:
                    stop.hook = type(hook).__name__
                return RoundOutcome(stop=stop)
        return None

    def summary(self) -> dict[str, Any]:
        return {"hooks": [repr(h) for h in self.hooks]}

    def on_summary(self, summary: Mapping[str, Any]) -> None:
        for hook in self.hooks:
            hook.on_run_end(summary)

    def state_dict(self) -> dict[str, Any]:
        return {
            "hooks": {
                type(h).__name__: h.state_dict() for h in self.hooks if hasattr(h, "state_dict")
            }
        }

    def load_state_dict(self, state: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        saved = state.get("hooks", {})
        for hook in self.hooks:
            name = type(hook).__name__
            if name in saved and hasattr(hook, "load_state_dict"):
                hook.load_state_dict(saved[name])
