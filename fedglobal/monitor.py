"""What the ServerApp does around the strategy's rounds, on every engine.

:class:`RunMonitor` is handed to ``strategy.start`` as its ``evaluate_fn``,
which Flower calls with the global weights before round 1 and after every
round. There it:

- runs server-side evaluation (``[server] eval_source`` and hooks'
  ``evaluate``), recorded as split ``server``;
- computes the L2 norm of every global variable and of its change in the
  round, and the bytes the round's messages carried (:mod:`fedglobal.comm`);
- writes TensorBoard scalars (:mod:`fedglobal.tensorboard`);
- calls the hooks' ``on_round_end`` with the round's pooled metrics, and
  early stopping (``[server] early_stopping_*`` or :class:`EarlyStopping`).
  A :class:`~fedglobal.hooks.StopRun` ends the rounds cleanly; the reason
  goes to summary.json.

After the rounds it optionally collects each region's local layers
(``[output] personal_models``), and once the run folder is written it adds
rounds.csv, layer_norms.csv, the plots and the MLflow run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

from fedglobal.comm import CommCounts, CountingGrid
from fedglobal.config import ExperimentConfig
from fedglobal.history import HistoryRecorder
from fedglobal.hooks import EarlyStopping, ServerHook, StopRun
from fedglobal.progress import RoundProgress
from fedglobal.rounds import run_rounds
from fedglobal.run_folder import PERSONAL_DIR, update_summary, write_table
from fedglobal.weights import from_record

__all__ = ["LOCAL_LAYERS_QUERY", "RunMonitor"]

log = logging.getLogger(__name__)

#: Message type asking each region for its local (personal) layers at the end.
LOCAL_LAYERS_QUERY = "query.local_layers"


def training_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """summary.json's ``training``: which path trained each round and why not the cohort.

    ``by_round`` maps each round with train replies to ``cohort``, ``keras-fit`` or
    the mix (``cohort:N keras-fit:M``); ``fallbacks`` maps each reason a round's
    regions trained with Keras ``fit`` to the rounds it applied to.
    """
    by_round: dict[str, str] = {}
    fallbacks: dict[str, list[int]] = {}
    for row in rows:
        trained_by = str(row.get("trained_by") or "")
        if not trained_by:
            continue
        by_round[str(int(row["round"]))] = trained_by
        reason = str(row.get("fallback_reason") or "")
        if reason:
            fallbacks.setdefault(reason, []).append(int(row["round"]))
    paths = set(by_round.values())
    path = next(iter(paths)) if len(paths) == 1 else ("mixed" if paths else "")
    return {"path": path, "by_round": by_round, "fallbacks": fallbacks}


def _evaluates(hook: ServerHook) -> bool:
    return type(hook).evaluate is not ServerHook.evaluate


class RunMonitor:
    """Round-end work of one run (see the module docstring)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        recorder: HistoryRecorder,
        progress: RoundProgress | None,
        *,
        hooks: Sequence[ServerHook] = (),
    ) -> None:
        from fedglobal.reporting import tracking

        tracking.check_available(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.recorder = recorder
        self.progress = progress
        self.hooks: list[ServerHook] = list(hooks)
        server = cfg.server
        if server.early_stopping_metric:
            self.hooks.append(
                EarlyStopping(
                    server.early_stopping_metric,
                    split=server.early_stopping_split,
                    patience=server.early_stopping_patience,
                    min_delta=server.early_stopping_min_delta,
                    mode=server.early_stopping_mode,
                )
            )
        self.counting: CountingGrid | None = None
        self.stopped: dict[str, Any] | None = None
        self.personal: dict[str, Any] | None = None
        self.last_arrays: ArrayRecord | None = None
        self.norm_rows: list[tuple[int, str, float, float]] = []
        self.round_rows: list[dict[str, float]] = []
        self._model: Any = None
        self._previous: dict[str, np.ndarray] | None = None
        self._counts_before = CommCounts()
        self._time_before = time.time()
        self._tb: Any = None
        self._fallbacks_logged: set[str] = set()
        #: The simulated clock's hook (``[geo]``), set by :meth:`attach_clock`.
        self.geo: Any = None
        if progress is not None:  # the round's line waits for the server's metrics
            progress.expect_server = bool(cfg.server.eval_source) or self.evaluates

    # -- setup ----------------------------------------------------------------
    def count(self, grid: Grid) -> CountingGrid:
        """Wrap ``grid`` so the bytes of every message are counted."""
        self.counting = CountingGrid(grid)
        return self.counting

    def attach_clock(self, geo: Any) -> None:
        """Time the rounds on ``geo`` (a :class:`fedglobal.geo.grid.GeoRounds`).

        rounds.csv gains ``sim_start_s`` and ``sim_end_s``; the run folder gains
        sim_times.csv, the summary fields and plots of :mod:`fedglobal.geo.outputs`.
        """
        self.geo = geo

    def sim_end_s(self, server_round: int) -> float | None:
        """The simulated end of ``server_round`` (0 for round 0; None without ``[geo]``)."""
        if self.geo is None:
            return None
        span = self.geo.clock.span(server_round)
        return span.end_s if span is not None else (0.0 if server_round == 0 else None)

    @property
    def evaluates(self) -> bool:
        """Whether any hook evaluates on the server."""
        return any(_evaluates(h) for h in self.hooks)

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
        """The strategy's rounds (:func:`fedglobal.rounds.run_rounds`) with this monitor
        as ``evaluate_fn``, from ``first_round`` (after a checkpoint: its round + 1).

        ``after_round(round, arrays)`` runs once each round is complete (the
        checkpoint). Returns the final global ArrayRecord (that of the last
        completed round if a hook stopped the run). Closes the progress bar and
        the TensorBoard writer on every path.
        """
        if self.cfg.server.eval_source:
            from fedglobal.server_eval import HeldOutEvaluation

            self.hooks.insert(0, HeldOutEvaluation(self.cfg, schema, self.cfg.server.eval_source))
        self._model = model
        if self.cfg.output.tensorboard:
            from fedglobal.tensorboard import TensorBoardWriter

            self._tb = TensorBoardWriter(self.run_dir)
        self.last_arrays = kwargs.get("initial_arrays")
        try:
            result = run_rounds(
                strategy,
                grid=grid,
                evaluate_fn=self.evaluate_fn,
                first_round=first_round,
                after_round=after_round,
                train_grid=None if self.geo is None else self.geo.for_round,
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
            if self._tb is not None:
                self._tb.close()
        if self.cfg.output.personal_models:
            self._collect_personal(strategy, grid, kwargs.get("train_config"), kwargs)
        return self.last_arrays

    # -- checkpoint and resume --------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What the monitor carries between rounds, as JSON values (for checkpoints).

        Its tables so far (rounds.csv, layer_norms.csv rows), the byte counters
        and the state of every hook that has a ``state_dict()`` (early stopping).
        """
        counts = self.counting.counts if self.counting else CommCounts()
        return {
            "norm_rows": [list(row) for row in self.norm_rows],
            "round_rows": [dict(row) for row in self.round_rows],
            "counts": dict(vars(counts)),
            "hooks": {
                type(h).__name__: h.state_dict() for h in self.hooks if hasattr(h, "state_dict")
            },
            **({"geo": self.geo.clock.state_dict()} if self.geo is not None else {}),
        }

    def load_state_dict(self, state: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
        """Continue from a :meth:`state_dict`, with ``weights`` the checkpoint's global weights.

        Call it after the start-up messages (statistics query) have been sent:
        the byte counters are set to the checkpoint's, so rounds.csv counts
        only the rounds' messages, as in an uninterrupted run.
        """
        self.norm_rows = [tuple(row) for row in state.get("norm_rows", [])]  # type: ignore[misc]
        self.round_rows = [dict(row) for row in state.get("round_rows", [])]
        counts = CommCounts(**{k: int(v) for k, v in state.get("counts", {}).items()})
        if self.counting is not None:
            self.counting.counts = counts
        self._counts_before = counts.copy()
        self._time_before = time.time()
        self._previous = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        if self.geo is not None and "geo" in state:
            self.geo.clock.load_state_dict(state["geo"])
        saved = state.get("hooks", {})
        for hook in self.hooks:
            name = type(hook).__name__
            if name in saved and hasattr(hook, "load_state_dict"):
                hook.load_state_dict(saved[name])

    # -- each round -----------------------------------------------------------
    def evaluate_fn(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Flower's centralized-evaluation callback: all round-end work happens here."""
        self.last_arrays = arrays
        weights = from_record(arrays)
        server = self._server_metrics(server_round, weights)
        norms = self._norms(server_round, weights)
        system = self._system(server_round)
        if self._tb is not None:
            skip = ("round", "seconds", "sim_start_s", "sim_end_s")
            scalars = {
                f"comm/{k}": v
                for k, v in system.items()
                if k not in skip and not isinstance(v, str)
            }
            scalars["time/round_seconds"] = system["seconds"]
            if "sim_end_s" in system:  # [geo]: simulated hours, for plotting against them
                scalars["time/sim_hours"] = system["sim_end_s"] / 3600.0
            self._tb.write_round(
                server_round,
                rows=self.recorder.round_rows(server_round),
                norms=norms,
                scalars=scalars,
            )
        if server_round > 0:
            pooled = self.recorder.pooled(server_round)
            for hook in self.hooks:
                try:
                    hook.on_round_end(server_round, pooled)
                except StopRun as stop:
                    if not stop.hook:
                        stop.hook = type(hook).__name__
                    raise
        return MetricRecord(server) if server else None

    def _server_metrics(self, server_round: int, weights: dict[str, np.ndarray]) -> dict:
        if not self.evaluates:
            return {}
        model = self._model
        model.set_weights([weights[v.path] for v in model.weights])
        values: dict[str, float] = {}
        for hook in self.hooks:
            if _evaluates(hook):
                out = hook.evaluate(server_round, model)
                values.update({str(k): float(v) for k, v in (out or {}).items()})
        self.recorder.record_server(server_round, values)
        return values

    def _norms(
        self, server_round: int, weights: dict[str, np.ndarray]
    ) -> dict[str, tuple[float, float | None]]:
        norms: dict[str, tuple[float, float | None]] = {}
        for name, value in weights.items():
            w = np.asarray(value, dtype=np.float64)
            update = None
            if self._previous is not None and name in self._previous:
                update = float(np.linalg.norm(w - self._previous[name]))
            norms[name] = (float(np.linalg.norm(w)), update)
            self.norm_rows.append(
                (server_round, name, norms[name][0], np.nan if update is None else update)
            )
        self._previous = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        return norms

    def _system(self, server_round: int) -> dict[str, float]:
        now = time.time()
        counts = self.counting.counts.copy() if self.counting else CommCounts()
        delta = counts.minus(self._counts_before)
        row = {
            "round": server_round,
            "seconds": round(now - self._time_before, 4),
            "bytes_sent": delta.sent,
            "bytes_received": delta.received,
            "array_bytes_sent": delta.sent_arrays,
            "array_bytes_received": delta.received_arrays,
            "messages_sent": delta.messages_sent,
            "messages_received": delta.messages_received,
        }
        if self.counting is not None:  # which path trained the round's regions, and why not cohort
            row["trained_by"], row["fallback_reason"] = self.counting.paths.take()
            reason = row["fallback_reason"]
            if reason and reason not in self._fallbacks_logged:  # once per run and reason
                self._fallbacks_logged.add(reason)
                chosen = "client.cohort = false" in reason or "cohort of one" in reason
                log.log(
                    logging.INFO if chosen else logging.WARNING,
                    "round %d: regions trained with Keras fit, not in a cohort: %s",
                    server_round,
                    reason,
                )
        if self.geo is not None:
            span = self.geo.clock.span(server_round)
            start, end = (span.start_s, span.end_s) if span else (np.nan, np.nan)
            if server_round == 0:
                start = end = 0.0
            row["sim_start_s"], row["sim_end_s"] = round(start, 6), round(end, 6)
        self.round_rows.append(row)
        self._counts_before, self._time_before = counts, now
        return row

    # -- personalised layers -------------------------------------------------
    def _collect_personal(
        self, strategy: Any, grid: Grid, config: ConfigRecord | None, kwargs: dict
    ) -> None:
        plan = getattr(strategy, "plan", None)
        last = int(self.recorder.rows[-1][0]) if self.recorder.rows else 0
        local = list(plan(max(1, last))[1]) if callable(plan) else []
        personal = getattr(strategy, "personal_variables", None)  # Ditto: the whole model
        if not local and callable(personal):
            local = list(personal())
        if not local:
            self.personal = {"layers": [], "regions": [], "failed": [], "note": "no local layers"}
            return
        base = dict(config or {})
        base.update({"local-layers": local, "server-round": last})
        messages = [
            Message(RecordDict({"config": ConfigRecord(dict(base))}), node, LOCAL_LAYERS_QUERY)
            for node in sorted(grid.get_node_ids())
        ]
        replies = grid.send_and_receive(messages, timeout=kwargs.get("timeout"))
        out = self.run_dir / PERSONAL_DIR
        regions, failed, index = [], [], {}
        for reply in replies:
            if reply.has_error():
                failed.append(reply.error.reason)
                continue
            region = str(reply.content["meta"]["region"])
            arrays = from_record(reply.content["arrays"])
            unknown = sorted(set(arrays) - set(local))
            if unknown:
                failed.append(f"region {region}: sent non-local variables {unknown[:5]}")
                continue
            out.mkdir(parents=True, exist_ok=True)
            name = f"region-{len(index):04d}.npz"
            with (out / name).open("wb") as fh:
                np.savez(fh, **arrays)
            index[region] = name
            regions.append(region)
        if index:
            import json

            (out / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
        self.personal = {"layers": local, "regions": sorted(regions), "failed": failed}
        if failed:
            log.warning("%d region(s) sent no local layers: %s", len(failed), failed[0])

    # -- the end --------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Fields this monitor adds to summary.json."""
        counts = self.counting.counts if self.counting else CommCounts()
        return {
            "stopped": self.stopped,
            "comm": {
                "bytes_sent": counts.sent,
                "bytes_received": counts.received,
                "array_bytes_sent": counts.sent_arrays,
                "array_bytes_received": counts.received_arrays,
                "messages_sent": counts.messages_sent,
                "messages_received": counts.messages_received,
            },
            "hooks": [repr(h) for h in self.hooks],
            "training": training_summary(self.round_rows),
            "personal_models": self.personal,
        }

    def finish(self, history: pd.DataFrame) -> dict[str, Any]:
        """After the run folder is written: tables, plots, MLflow, hooks' on_run_end."""
        write_table(self.run_dir, "rounds.csv", pd.DataFrame(self.round_rows))
        write_table(
            self.run_dir,
            "layer_norms.csv",
            pd.DataFrame(
                self.norm_rows, columns=["round", "variable", "weight_norm", "update_norm"]
            ),
        )
        extra: dict[str, Any] = {}
        if self.geo is not None:
            extra.update(self._finish_geo(history))
        if self.cfg.output.plots:
            from fedglobal.reporting.plots import key_metric, write_run_plots

            files = write_run_plots(history, self.cfg.data.task, self.run_dir / "plots")
            if self.geo is not None:
                from fedglobal.geo.outputs import write_geo_plots

                metric = key_metric(self.cfg.data.task)
                files += write_geo_plots(
                    self.geo.clock,
                    pd.DataFrame(self.round_rows),
                    history,
                    metric,
                    self.run_dir / "plots",
                )
            extra["plots"] = [str(p.relative_to(self.run_dir)) for p in files]
        if self.cfg.output.mlflow:
            extra["mlflow"] = self._log_mlflow(history)
        summary = update_summary(self.run_dir, extra)
        for hook in self.hooks:
            hook.on_run_end(summary)
        return summary

    def _finish_geo(self, history: pd.DataFrame) -> dict[str, Any]:
        """sim_times.csv, and the summary fields of the simulated clock."""
        from fedglobal.geo.outputs import sim_times_frame, summary_fields

        assert self.cfg.geo is not None
        write_table(self.run_dir, "sim_times.csv", sim_times_frame(self.geo.clock))
        return summary_fields(
            self.geo.clock, history, target=self.cfg.geo.target, server=self.geo.server
        )

    def _log_mlflow(self, history: pd.DataFrame) -> dict[str, Any]:
        from fedglobal.reporting import tracking

        try:
            return tracking.log_run(
                self.cfg,
                self.run_dir,
                history,
                system=pd.DataFrame(self.round_rows),
                tags={"fedglobal.engine": self.cfg.experiment.engine},
            )
        except Exception as exc:  # a tracking server being down must not lose the run
            log.warning("MLflow logging failed: %s", exc)
            return {"error": f"{type(exc).__name__}: {exc}"}
