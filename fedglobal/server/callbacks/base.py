"""What a round-end job is: :class:`RoundCallback`, in the style of pfl-research's callbacks.

:class:`~fedglobal.server.monitor.RunMonitor` runs its callbacks in a fixed
order (see :mod:`fedglobal.server.callbacks`). A callback overrides only what
it needs; every method has a no-op default:

- :meth:`~RoundCallback.on_train_begin` once before the rounds, with the run
  (:class:`TrainRun`);
- :meth:`~RoundCallback.after_round` after round 0 (the initial model) and
  every round, with the round's global weights and the metrics the callbacks
  before it returned this round. It returns a :class:`RoundOutcome`: metrics
  to add (for the callbacks after it: TensorBoard writes them) and a stop
  flag. Every callback runs; the run ends after the round if any asked;
- :meth:`~RoundCallback.close` after the rounds on every path (errors
  included), then :meth:`~RoundCallback.on_train_end` after the last round of
  a run that completed or stopped;
- :meth:`~RoundCallback.summary`: fields of summary.json, written with the run folder;
- :meth:`~RoundCallback.on_run_end` once the run folder is written: files of
  its own, and the summary fields they add; then
  :meth:`~RoundCallback.on_summary` with the final summary;
- :meth:`~RoundCallback.state_dict` / :meth:`~RoundCallback.load_state_dict`
  for the callbacks that carry state between rounds (saved in resume.npz).
  The keys of every callback's state are entries of the checkpoint's
  ``monitor`` dict, so they are unique across callbacks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ConfigRecord
from flwr.serverapp import Grid

__all__ = ["RoundCallback", "RoundOutcome", "StopRun", "TrainRun"]


class StopRun(Exception):  # a control-flow signal, like StopIteration
    """Raised by a hook's ``on_round_end`` to stop the run cleanly after this round."""

    def __init__(self, reason: str, *, hook: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hook = hook


@dataclass(frozen=True)
class TrainRun:
    """The run as the callbacks see it when the rounds begin.

    Attributes:
        strategy: the Flower strategy.
        model: the Keras model built for the federated schema.
        schema: the federated :class:`~fedglobal.data.Schema`.
        grid: the Grid the rounds' messages go through.
        train_config: the config record sent with training messages.
        timeout: seconds to wait for replies.
    """

    strategy: Any
    model: Any
    schema: Any
    grid: Grid
    train_config: ConfigRecord | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class RoundOutcome:
    """What :meth:`RoundCallback.after_round` returns.

    Attributes:
        metrics: numbers to add to the round's metrics, by name (``"comm/bytes_sent"``,
            ``"weight_norm/dense/kernel"``...); the callbacks after this one see them.
        stop: a :class:`StopRun` to end the run after this round (its reason and
            who stopped go to summary.json's ``stopped``), or None.
    """

    metrics: Mapping[str, float] = field(default_factory=dict)
    stop: StopRun | None = None


class RoundCallback:
    """Base class of the round-end jobs (see the module docstring)."""

    def on_train_begin(self, run: TrainRun) -> None:
        """Before the rounds (and before round 0's :meth:`after_round`)."""

    def after_round(
        self,
        server_round: int,
        weights: Mapping[str, np.ndarray],
        metrics: Mapping[str, float],
    ) -> RoundOutcome | None:
        """After ``server_round`` (0: the initial model), with its global ``weights``."""
        return None

    def close(self) -> None:
        """After the rounds, on every path: release files and writers."""

    def on_train_end(self) -> None:
        """After the last round of a run that completed or was stopped."""

    def summary(self) -> dict[str, Any]:
        """Fields of summary.json, written with the run folder."""
        return {}

    def on_run_end(self, history: pd.DataFrame) -> dict[str, Any]:
        """Once the run folder is written: write files; returns summary fields to add."""
        return {}

    def on_summary(self, summary: Mapping[str, Any]) -> None:
        """Called last, with the final summary."""

    def state_dict(self) -> dict[str, Any]:
        """What this callback carries between rounds, as JSON values ({} if nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        """Continue from a checkpoint: ``state`` is the checkpoint's ``monitor`` dict
        (all callbacks' entries), ``weights`` its global weights."""
