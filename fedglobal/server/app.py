"""The Flower ServerApp (component ``fedglobal.server.app:app``).

Written once for every engine. One run:

1. asks every region for aggregate statistics (sums, counts, label sets) and
   merges them into the federated schema (normalisation, classes, encoding);
2. builds the model for that schema -> initial *named* weights;
3. evaluates the initial model (round 0), then runs the strategy's rounds
   (:func:`fedglobal.server.rounds.run_rounds`, Flower's ``Strategy.start`` loop)
   through :class:`~fedglobal.server.monitor.RunMonitor` (server-side evaluation,
   weight and update norms, bytes per round, TensorBoard, hooks, early stopping),
   writing the resumable checkpoint ``resume.npz`` every ``[server]
   checkpoint_every`` rounds (:mod:`fedglobal.server.checkpointing`);
4. writes the run folder: config.toml, history.csv, summary.json, model.keras,
   checkpoint.npz, rounds.csv, layer_norms.csv and plots.

When resuming (run_config ``resume``, or :func:`fedglobal.run.checkpoint.resuming`
in this process), steps 1-2 run as usual, then the checkpoint's weights and
state replace the initial ones and the rounds continue after its round.

Flower's run_config carries the resolved experiment (TOML text), the folder
the experiment's relative paths are resolved against, and the run folder;
optionally ``quiet``, ``engine`` (recorded in the summary) and
``expected-nodes`` (how many regional clients to wait for before starting;
0 means the strategy's ``min_available_clients``).

The engine's Grid is wrapped in a :class:`~fedglobal.server.grid.ServerGrid`
(bounded waits, replies sorted by region, failures named by region), the same
on every engine.
"""

from __future__ import annotations

import logging
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

import strategies
from fedglobal import data
from fedglobal.config import ExperimentConfig, ExperimentSection
from fedglobal.errors import RunError
from fedglobal.protocol import (
    META_KEY,
    REGION_KEY,
    SERVER_ROUND_KEY,
    STATS_QUERY,
    from_record,
    to_record,
)
from fedglobal.run import checkpoint
from fedglobal.run.folder import write_run_folder
from fedglobal.runtime.quiet import verbose as verbose_console
from fedglobal.server import checkpointing as resume
from fedglobal.server.callbacks import hooks as server_hooks
from fedglobal.server.checkpointing import Checkpointer
from fedglobal.server.comm import DecodingGrid
from fedglobal.server.grid import ServerGrid
from fedglobal.server.history import HistoryRecorder
from fedglobal.server.monitor import RunMonitor
from fedglobal.server.progress import RoundProgress
from strategies.interface import view

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point Flower calls on every engine."""
    run_federation(grid, context.run_config)


def experiment_from_run_config(run_config: dict[str, Any]) -> ExperimentConfig:
    """The experiment carried in Flower's run_config."""
    raw = tomllib.loads(str(run_config["experiment-toml"]))
    return ExperimentConfig.from_dict(raw, base_dir=str(run_config.get("base-dir", ".")))


def _wait_for_nodes(grid: Grid, expected: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= expected:
            return nodes
        if time.monotonic() > deadline:
            raise RunError(
                f"waited {timeout:g}s for {expected} regional clients; "
                f"only {len(nodes)} connected (expected {expected}, connected {len(nodes)})"
            )
        time.sleep(0.2)


def federated_schema(
    grid: Grid, cfg: ExperimentConfig, base_config: ConfigRecord, timeout: float
) -> tuple[data.Schema, list[str], dict[str, data.LocalStats]]:
    """Ask every connected region for its statistics and merge them into the schema.

    Returns the schema, the sorted region names and each region's statistics
    (``n_rows``: its train row count).
    """
    nodes = sorted(grid.get_node_ids())
    messages = [
        Message(RecordDict({"config": ConfigRecord(dict(base_config))}), node, STATS_QUERY)
        for node in nodes
    ]
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    stats, regions, failed = [], [], []
    for reply in replies:
        if reply.has_error():
            failed.append(reply.error.reason)  # the ServerGrid names the region or node
            continue
        content = reply.content
        stats.append(data.LocalStats.from_records(content["metrics"], content["lists"]))
        regions.append(str(content[META_KEY][REGION_KEY]))
    if failed:
        raise RunError("regions failed to report their statistics: " + "; ".join(failed))
    if len(replies) < len(nodes):
        raise RunError(
            f"only {len(replies)} of {len(nodes)} regions reported statistics within {timeout}s"
        )
    by_region = dict(zip(regions, stats, strict=True))
    return data.merge_stats(stats, cfg), sorted(regions), by_region


#: ``[experiment]`` keys that say where and on which engine a run executes: no
#: client reads them, so the regions receive their defaults (:func:`wire_experiment`).
RUN_PLACEMENT_KEYS = ("engine", "output_dir", "workers")


def wire_experiment(cfg: ExperimentConfig) -> str:
    """The experiment TOML the regions receive in every message.

    The keys of :data:`RUN_PLACEMENT_KEYS` are left at their defaults, so the
    messages, their bytes in rounds.csv and the simulated clock (``[geo]``)
    are the same whichever engine and output folder run the experiment.
    """
    defaults = ExperimentSection()
    placement = {f"experiment.{k}": getattr(defaults, k) for k in RUN_PLACEMENT_KEYS}
    if all(getattr(cfg.experiment, k) == getattr(defaults, k) for k in RUN_PLACEMENT_KEYS):
        return cfg.to_toml()
    return cfg.replace(placement).to_toml()


def initial_weights(cfg: ExperimentConfig, schema: data.Schema) -> tuple[Any, dict]:
    """The model and its initial named weights, seeded by the experiment's seed."""
    import keras

    from fedglobal.models import build_model

    keras.utils.set_random_seed(cfg.experiment.seed)
    model = build_model(cfg.model, schema)
    return model, {v.path: np.asarray(v.numpy()) for v in model.weights}


def build_strategy(cfg: ExperimentConfig, recorder: HistoryRecorder) -> Any:
    """The configured strategy, seeded, with the recorder as its metric aggregator."""
    return strategies.get(
        cfg.strategy.name,
        **{
            "seed": cfg.experiment.seed,
            "wait_timeout": cfg.experiment.round_timeout,
            **cfg.strategy.params,
            "train_metrics_aggr_fn": recorder.aggregate_train,
            "evaluate_metrics_aggr_fn": recorder.aggregate_evaluate,
        },
    )


def run_federation(grid: Grid, run_config: dict[str, Any]) -> None:
    """Run one experiment on ``grid`` and write its run folder."""
    started = time.time()
    cfg = experiment_from_run_config(run_config)
    run_dir = Path(str(run_config["run-dir"]))
    quiet = bool(run_config.get("quiet", False))
    if not (run_config.get("verbose", False) or verbose_console()):
        logging.getLogger("flwr").setLevel(logging.WARNING)  # our progress lines replace them
    timeout = cfg.experiment.round_timeout

    resume_from = run_config.get("resume") or checkpoint.pending()
    ckpt = checkpoint.load(resume_from) if resume_from else None
    if ckpt is not None:
        checkpoint.check_compatible(ckpt, cfg.to_toml())

    progress = RoundProgress(cfg.experiment.rounds, cfg.data.task, quiet=quiet)
    round_end_s: list[float] = list(ckpt.extra.get("round_end_s", [])) if ckpt else []

    def on_round(server_round: int, split: str, pooled: dict, regions: list[str]) -> None:
        if split == "test":
            round_end_s.append(round(time.time() - started, 3))
        progress(server_round, split, pooled, regions)

    recorder = HistoryRecorder(task=cfg.data.task, on_round=on_round)
    strategy = build_strategy(cfg, recorder)
    facing = view(strategy)  # what the server asks of it beyond Flower's Strategy
    minimum = {"train": facing.needs.min_train_nodes, "evaluate": facing.needs.min_evaluate_nodes}
    clients_are_local = bool(getattr(grid, "clients_are_local", False))
    grid = server_grid = ServerGrid(
        grid, minimum=lambda stage: minimum.get(stage, 0), retries=cfg.server.round_retries
    )
    monitor = RunMonitor(cfg, run_dir, recorder, progress, hooks=server_hooks.current())
    grid = monitor.count(grid)  # bytes of every message, for rounds.csv and TensorBoard
    grid = DecodingGrid(grid)  # compressed updates (client.compression): decoded, after counting
    expected = int(run_config.get("expected-nodes", 0) or 0)
    needed = max(expected, facing.needs.min_available_nodes)
    _wait_for_nodes(grid, needed, cfg.engine.connect_timeout)

    base_config = ConfigRecord(
        {"experiment": wire_experiment(cfg), "base-dir": cfg.base_dir, SERVER_ROUND_KEY: 0}
    )
    schema, regions, region_stats = federated_schema(grid, cfg, base_config, timeout)
    rows = {region: int(s.n_rows) for region, s in region_stats.items()}
    model, weights = initial_weights(cfg, schema)
    if cfg.geo is not None:  # the simulated clock: where the server sends and receives
        from fedglobal.geo.setup import server_clock

        counting = monitor.counting
        monitor.attach_clock(
            server_clock(
                cfg,
                model=model,
                rows=rows,
                regions=regions,
                strategy=strategy,
                region_of=server_grid.region_of,
                reply_bytes=lambda: counting.last_reply_bytes if counting else {},
                needed=max(facing.needs.min_available_nodes, minimum["train"]),
                stats=region_stats,
            )
        )
        progress.sim_time = monitor.sim_end_s
    if facing.grouped:  # hierfavg: the regions' groups (and links, [geo])
        from fedglobal.geo.hierarchy import attach_groups

        vocab = {region: dict(s.vocab) for region, s in region_stats.items()}
        attach_groups(strategy, cfg, regions=regions, vocab=vocab, monitor=monitor)

    facing.bind(list(weights))

    round_config = ConfigRecord({**dict(base_config), "schema": schema.to_json()})
    checkpointer = Checkpointer(
        run_dir,
        every=cfg.server.checkpoint_every,
        num_rounds=cfg.experiment.rounds,
        config_toml=cfg.to_toml(),
        schema_json=schema.to_json(),
        strategy=strategy,
        recorder=recorder,
        monitor=monitor,
        state_grid=server_grid,  # not counted: rounds.csv as in an uninterrupted run
        state_config=ConfigRecord(dict(base_config)),
        timeout=timeout,
        extra=lambda: {
            "round_end_s": list(round_end_s),
            "retried_stages": list(server_grid.retried),
        },
        # Client state (local and interval-skipped layers, compression residuals)
        # is fetched only from a Grid whose nodes are local (the in-process one):
        # elsewhere it would send local layers to the server and wait on dead nodes.
        collect_state=clients_are_local,
    )
    if ckpt is None:
        arrays = to_record(weights)
        initial = strategy.configure_evaluate(0, arrays, ConfigRecord(dict(round_config)), grid)
        strategy.aggregate_evaluate(0, grid.send_and_receive(initial, timeout=timeout))
    else:
        resume.restore(
            ckpt,
            strategy=strategy,
            recorder=recorder,
            monitor=monitor,
            schema_json=schema.to_json(),
            names=list(weights),
            state_grid=server_grid,
            region_of=server_grid.region_of,
            state_config=ConfigRecord(dict(base_config)),
            timeout=timeout,
        )
        server_grid.retried.extend(ckpt.extra.get("retried_stages", []))
        weights = dict(ckpt.weights)
        arrays = to_record(weights)
        progress.display.print(
            f"resuming from {ckpt.path} after round {ckpt.round} of {cfg.experiment.rounds}"
        )

    final_arrays = monitor.start(  # the rounds + server eval, norms, TensorBoard, hooks
        strategy,
        model=model,
        schema=schema,
        grid=grid,
        initial_arrays=arrays,
        num_rounds=cfg.experiment.rounds,
        first_round=ckpt.round + 1 if ckpt is not None else 1,
        after_round=checkpointer,
        timeout=timeout,
        train_config=ConfigRecord(dict(round_config)),
        evaluate_config=ConfigRecord(dict(round_config)),
    )
    final = from_record(final_arrays) if final_arrays is not None else weights
    model.set_weights([final[v.path] for v in model.weights])
    write_run_folder(
        run_dir,
        cfg=cfg,
        history=recorder.frame(),
        model=model,
        weights=final,
        schema=schema,
        regions=regions,
        extra={
            "wall_time_s": time.time() - started,
            "retried_stages": list(server_grid.retried),
            **facing.outcomes(),
            "engine": str(run_config.get("engine", cfg.experiment.engine)),
            "placement": server_grid.placement(
                str(run_config.get("engine", cfg.experiment.engine))
            ),
            "round_end_s": round_end_s,
            "resumed_from": None if ckpt is None else {"round": ckpt.round, "file": str(ckpt.path)},
            "checkpoints": checkpointer.written,
            **monitor.summary(),
        },
    )
    monitor.finish(recorder.frame())  # rounds.csv, layer_norms.csv, plots, MLflow
