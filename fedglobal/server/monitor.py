"""What the ServerApp does around the strategy's rounds, on every engine.

:class:`RunMonitor` is handed to the round loop as its ``evaluate_fn``, which
is called with the global weights after round 0 (the initial model) and after
every round. It runs the round-end jobs of :mod:`fedglobal.server.callbacks`
in a fixed order (:attr:`RunMonitor.callbacks`): server-side evaluation,
weight norms, system metrics (bytes, timings), TensorBoard, the hooks and
early stopping, personal layers, the simulated clock's outputs, plots and
MLflow. A callback that returns a stop (a hook's
:class:`~fedglobal.server.callbacks.base.StopRun`) ends the rounds cleanly
after the round; the reason goes to summary.json's ``stopped``.

The monitor's checkpoint state is the callbacks' states together
(:meth:`RunMonitor.state_dict`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid

from fedglobal.config import ExperimentConfig
from fedglobal.protocol import from_record
from fedglobal.run.folder import update_summary
from fedglobal.server.callbacks import early_stopping
from fedglobal.server.callbacks.base import RoundCallback, StopRun, TrainRun
from fedglobal.server.callbacks.evaluation import ServerEvaluation, evaluates
from fedglobal.server.callbacks.geo import GeoOutputs
from fedglobal.server.callbacks.hooks import RunHooks, ServerHook
from fedglobal.server.callbacks.mlflow import MLflowLogging
from fedglobal.server.callbacks.norms import WeightNorms
from fedglobal.server.callbacks.personal_layers import PersonalLayers
from fedglobal.server.callbacks.plots import Plots
from fedglobal.server.callbacks.system import SystemMetrics
from fedglobal.server.callbacks.tensorboard import TensorBoardLogging
from fedglobal.server.comm import CountingGrid
from fedglobal.server.history import HistoryRecorder
from fedglobal.server.progress import RoundProgress
from fedglobal.server.rounds import run_rounds

__all__ = ["RunMonitor"]

log = logging.getLogger(__name__)


class RunMonitor:
    """Runs one run's round-end callbacks (see the module docstring).

    Args:
        cfg: the experiment (which optional callbacks run).
        run_dir: the run folder.
        recorder: the run's history.
        progress: the progress display, or None.
        hooks: the user's server hooks (early stopping from ``[server]`` is added last).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        recorder: HistoryRecorder,
        progress: RoundProgress | None,
        *,
        hooks: Sequence[ServerHook] = (),
    ) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.recorder = recorder
        self.progress = progress
        #: The run's hooks, shared by the evaluation and hooks callbacks.
        self.hooks: list[ServerHook] = list(hooks)
        stopper = early_stopping.from_config(cfg.server)
        if stopper is not None:
            self.hooks.append(stopper)
        self.geo_outputs = GeoOutputs(cfg, self.run_dir)
        self.system = SystemMetrics(self.run_dir, self.geo_outputs)
        output = cfg.output
        callbacks: list[RoundCallback | None] = [
            ServerEvaluation(cfg, recorder, self.hooks),
            WeightNorms(self.run_dir),
            self.system,
            TensorBoardLogging(self.run_dir, recorder) if output.tensorboard else None,
            RunHooks(recorder, self.hooks),
            PersonalLayers(self.run_dir, recorder, collect=output.personal_models),
            self.geo_outputs,
            Plots(cfg, self.run_dir, self.system, self.geo_outputs) if output.plots else None,
            MLflowLogging(cfg, self.run_dir, self.system) if output.mlflow else None,
        ]
        #: The round-end jobs, in the order they run.
        self.callbacks: list[RoundCallback] = [c for c in callbacks if c is not None]
        #: summary.json's ``stopped``: the round, reason and who stopped (None: not stopped).
        self.stopped: dict[str, Any] | None = None
        #: The global arrays of the last round seen.
        self.last_arrays: ArrayRecord | None = None
        if progress is not None:  # the round's line waits for the server's metrics
            progress.expect_server = bool(cfg.server.eval_source) or self.evaluates

    # -- setup ----------------------------------------------------------------
    def count(self, grid: Grid) -> CountingGrid:
        """Wrap ``grid`` so the bytes of every message are counted."""
        return self.system.count(grid)

    @property
    def counting(self) -> CountingGrid | None:
        """The counting Grid (:meth:`count`), or None before it."""
        return self.system.counting

    def attach_clock(self, geo: Any) -> None:
        """Time the rounds on ``geo`` (a :class:`fedglobal.geo.grid.GeoRounds`).

        rounds.csv gains ``sim_start_s`` and ``sim_end_s``; the run folder gains
        sim_times.csv, the summary fields and plots of :mod:`fedglobal.geo.outputs`.
        """
        self.geo_outputs.attach(geo)

    @property
    def geo(self) -> Any:
        """The simulated clock's hook (``[geo]``), set by :meth:`attach_clock`; else None."""
        return self.geo_outputs.geo

    def sim_end_s(self, server_round: int) -> float | None:
        """The simulated end of ``server_round`` (0 for round 0; None without ``[geo]``)."""
        return self.geo_outputs.sim_end_s(server_round)

    @property
    def evaluates(self) -> bool:
        """Whether any hook evaluates on the server."""
        return evaluates(self.hooks)

    def start(
        self,
        strategy: Any,
        *,
        model: Any,
        schema: Any,
        grid: Grid,
        first_round: int = 1,
        after_round: Callable[[int, ArrayRecord], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """The strategy's rounds (:func:`fedglobal.server.rounds.run_rounds`) with this monitor
        as ``evaluate_fn``, from ``first_round`` (after a checkpoint: its round + 1).

        ``after_round(round, arrays)`` runs once each round is complete (the
        checkpoint). Returns the final global ArrayRecord (that of the last
        completed round if a hook stopped the run). Closes the progress bar and
        the callbacks (the TensorBoard writer) on every path.
        """
        run = TrainRun(
            strategy,
            model,
            schema,
            grid,
            train_config=kwargs.get("train_config"),
            timeout=kwargs.get("timeout"),
        )
        self.last_arrays = kwargs.get("initial_arrays")
        try:
            for callback in self.callbacks:
                callback.on_train_begin(run)
            geo = self.geo
            result = run_rounds(
                strategy,
                grid=grid,
                evaluate_fn=self.evaluate_fn,
                first_round=first_round,
                after_round=after_round,
                train_grid=None if geo is None else geo.for_round,
                **kwargs,
            )
            if not result.aggregated and first_round <= 1:
                log.warning("no round aggregated any update: the final model is the initial one")
        except StopRun as stop:
            self.stopped = {
                "round": int(self.recorder.rows[-1][0]) if self.recorder.rows else 0,
                "reason": stop.reason,
                "by": stop.hook or type(stop).__name__,
            }
            log.info("run stopped after round %s: %s", self.stopped["round"], stop.reason)
        finally:
            if self.progress is not None:
                self.progress.close()
            for callback in self.callbacks:
                callback.close()
        for callback in self.callbacks:
            callback.on_train_end()
        return self.last_arrays

    # -- checkpoint and resume --------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What the callbacks carry between rounds, as JSON values (for checkpoints).

        The tables so far (layer_norms.csv, rounds.csv rows), the byte counters,
        the hooks' states (early stopping) and the simulated clock's.
        """
        state: dict[str, Any] = {}
        for callback in self.callbacks:
            state.update(callback.state_dict())
        return state

    def load_state_dict(self, state: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        """Continue from a :meth:`state_dict`, with ``weights`` the checkpoint's global weights.

        Call it after the start-up messages (statistics query) have been sent:
        the byte counters are set to the checkpoint's, so rounds.csv counts
        only the rounds' messages, as in an uninterrupted run.
        """
        for callback in self.callbacks:
            callback.load_state_dict(state, weights)

    # -- each round -----------------------------------------------------------
    def evaluate_fn(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """The round loop's ``evaluate_fn``: the callbacks' ``after_round``, in order.

        Returns the server-side metrics (None without server evaluation). Raises
        the first :class:`StopRun` a callback returned, once all have run.
        """
        self.last_arrays = arrays
        weights = from_record(arrays)
        metrics: dict[str, float] = {}
        stop: StopRun | None = None
        for callback in self.callbacks:
            outcome = callback.after_round(server_round, weights, metrics)
            if outcome is not None:
                metrics.update(outcome.metrics)
                stop = stop or outcome.stop
        if stop is not None:
            raise stop
        server = {
            k.removeprefix("server/"): v for k, v in metrics.items() if k.startswith("server/")
        }
        return MetricRecord(server) if server else None

    # -- the end --------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Fields the monitor adds to summary.json (written with the run folder)."""
        fields: dict[str, Any] = {"stopped": self.stopped}
        for callback in self.callbacks:
            fields.update(callback.summary())
        return fields

    def finish(self, history: pd.DataFrame) -> dict[str, Any]:
        """After the run folder is written: the callbacks' files (rounds.csv, layer_norms.csv,
        sim_times.csv, plots, MLflow) and summary fields, then the hooks' ``on_run_end``."""
        extra: dict[str, Any] = {}
        for callback in self.callbacks:
            extra.update(callback.on_run_end(history))
        summary = update_summary(self.run_dir, extra)
        for callback in self.callbacks:
            callback.on_summary(summary)
        return summary
