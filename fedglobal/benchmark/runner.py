"""Run a benchmark suite: every cell of the grid, in this process, into one folder.

``run_benchmark("experiments/benchmarks/fedprox_synthetic.toml")`` runs every
(dataset, condition, strategy, seed) cell with :func:`fedglobal.simulate` on
the in-process engine, or a baseline (:mod:`fedglobal.benchmark.baselines`),
and writes ``runs/bench-<name>/`` (``bench-<name>-full`` at the ``--full`` scale):

- ``results.csv``: one row per run and round (pooled test metrics, train loss,
  worst- and mean-region headline metric, bytes per round, elapsed seconds,
  the run's wall and CPU time and folder), and one row per failed run
  (``status = failed`` and the error);
- ``summary.csv`` and ``summary.md``: see :mod:`fedglobal.benchmark.summary`;
- ``plots/``: see :mod:`fedglobal.benchmark.plots`;
- ``suite.toml``: the suite as run; ``cells/``: every run's own folder.

Fairness. Every strategy of a dataset and seed sees the same data, the same
train/test split, the same initial weights, client sampling, shuffles and
straggler draws (all derive from the seed, DESIGN decision 8) and the same
budget: rounds and local work come from the suite's shared ``[base]``.

Reuse. Cells run one after another in this process, ordered dataset, seed,
condition, strategy, so the ClientApp's per-process caches (the source table,
the prepared partition, and the compiled Keras model keyed by model, optimizer
and schema) serve every strategy of a dataset and seed: nothing is re-read or
recompiled between them.

Failures. An exception in a cell (an invalid experiment, an unregistered
strategy, a run that lost too many clients) is caught and recorded; the grid
goes on. ``KeyboardInterrupt`` stops the grid after writing what finished.

Bytes per round. Measured when the run folder has ``rounds.csv`` (the
ServerApp's counting Grid, :mod:`fedglobal.server.comm`): every record of every
message sent and received in the round (weights, configs, metrics), averaged
over rounds 1..R in the summary (``bytes_source = measured``). Otherwise
computed (``computed``): the model's named arrays serialised as Flower does
(``ArrayRecord.count_bytes()`` of the final weights) times the messages that
carry weights in a training round: the train instructions sent (``n_train``),
their replies (``n_train``) and the evaluate instructions (``n_eval``), with
``n_train`` and ``n_eval`` from the strategy's sampling rule
(``max(int(n * fraction), minimum)``, capped at ``n``); configs and metrics
are left out. On gapminder (22 regions) the computed figure equals the
measured array bytes exactly (1,340,328 B per round). Dropped stragglers' and
attackers' replies still travel, so they count. Local-only training sends
nothing (0); centralised training moves raw rows instead (no figure).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import shutil
import time
import traceback
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.benchmark.suite import LOWER_IS_BETTER, Cell, Suite, load_suite
from fedglobal.config import ExperimentConfig
from fedglobal.errors import FedGlobalError

__all__ = ["BenchmarkResult", "CellResult", "run_benchmark", "select_cells"]

log = logging.getLogger(__name__)

RESULT_COLUMNS = [
    "suite",
    "dataset",
    "condition",
    "strategy",
    "kind",
    "seed",
    "status",
    "error",
    "round",
    "metric",
    "value",
    "test_loss",
    "train_loss",
    "region_worst",
    "region_mean",
    "bytes_per_round",
    "bytes_source",
    "elapsed_s",
    "run_wall_s",
    "run_cpu_s",
    "run_dir",
]


@dataclass
class CellResult:
    """The outcome of one cell: its per-round rows, or the error that stopped it."""

    cell: Cell
    status: str
    metric: str = ""
    error: str = ""
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    final_regions: dict[str, float] = field(default_factory=dict)
    wall_time_s: float = math.nan
    cpu_time_s: float = math.nan
    bytes_per_round: float = math.nan
    run_dir: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class BenchmarkResult:
    """A finished benchmark: its folder, the tidy per-round results and the summary."""

    suite: Suite
    out_dir: Path
    results: pd.DataFrame
    summary: pd.DataFrame
    cells: list[CellResult]
    wall_time_s: float
    plots: list[Path] = field(default_factory=list)

    @property
    def failed(self) -> list[CellResult]:
        return [c for c in self.cells if not c.ok]


# -- selecting cells ---------------------------------------------------------------------


def select_cells(cells: Sequence[Cell], only: Sequence[str] = ()) -> list[Cell]:
    """Filter cells with ``--only`` patterns.

    A pattern ``KEY=GLOB`` (KEY one of dataset, condition, strategy) matches that
    label; a bare ``GLOB`` matches any of the three. Patterns with the same key
    are alternatives (OR); different keys must all match (AND). Case-insensitive.
    """
    import fnmatch

    from fedglobal.benchmark.suite import SuiteError

    by_key: dict[str, list[str]] = {}
    for pattern in only:
        key, sep, glob = pattern.partition("=")
        if not sep:
            key, glob = "any", pattern
        key = key.strip().lower()
        if key not in ("any", "dataset", "condition", "strategy"):
            raise SuiteError(
                f"--only {pattern!r}: the key must be dataset, condition or strategy "
                "(e.g. --only strategy=fedprox*), or give a bare glob"
            )
        by_key.setdefault(key, []).append(glob.strip().lower())

    def labels(cell: Cell) -> dict[str, str]:
        return {
            "dataset": cell.dataset.label.lower(),
            "condition": cell.condition.label.lower(),
            "strategy": cell.strategy.label.lower(),
        }

    def matches(cell: Cell) -> bool:
        names = labels(cell)
        for key, globs in by_key.items():
            values = list(names.values()) if key == "any" else [names[key]]
            if not any(fnmatch.fnmatchcase(v, g) for v in values for g in globs):
                return False
        return True

    selected = [c for c in cells if matches(c)]
    if only and not selected:
        raise SuiteError(f"--only {' '.join(only)} matches no cell of the suite")
    return selected


# -- one cell ----------------------------------------------------------------------------


def _attack_module() -> Any:
    # The benchmark drives both server and clients; fedglobal does not import
    # ``clients`` at import time (DESIGN: imports run one way).
    return importlib.import_module("clients.attacks")


def _malicious_regions(regions: Sequence[str], fraction: float, seed: int) -> list[str]:
    """``round(fraction * n)`` regions (at least 1), chosen by ``(seed, "attack")``."""
    count = min(len(regions), max(1, round(fraction * len(regions))))
    rng = np.random.default_rng([seed, zlib.crc32(b"attack")])
    chosen = rng.choice(len(regions), size=count, replace=False)
    ordered = sorted(regions)
    return sorted(ordered[i] for i in chosen.tolist())


@contextlib.contextmanager
def _attack(cell: Cell, cfg: ExperimentConfig, log_dir: Path) -> Iterator[Any]:
    """Activate the cell's attack plan; afterwards, check that some client applied it."""
    spec = cell.condition.attack
    if not spec:
        yield None
        return
    from fedglobal import data

    attacks = _attack_module()
    regions = _malicious_regions(data.list_regions(cfg), float(spec["fraction"]), cell.seed)
    log_path = log_dir / f".attack-{cell.slug}.log"
    log_path.unlink(missing_ok=True)
    plan = attacks.AttackPlan.create(
        str(spec["kind"]), regions, scale=spec.get("scale"), seed=cell.seed, log_path=log_path
    )
    with attacks.active(plan):
        yield plan
    applied = attacks.logged(log_path)
    log_path.unlink(missing_ok=True)
    if not applied:
        raise FedGlobalError(
            f"attack {plan.kind!r} was planned for regions {', '.join(regions)} but no client "
            "applied it: the ClientApp does not call clients.attacks.for_training / "
            "poison_update (see clients/attacks.py)"
        )


def _sample_size(n: int, fraction: float, minimum: int) -> int:
    return min(max(int(n * fraction), minimum), n)


def _model_bytes(run_dir: Path) -> int:
    from fedglobal.protocol import to_record

    with np.load(run_dir / "checkpoint.npz") as ckpt:
        weights = {k: ckpt[k] for k in ckpt.files if not k.startswith("__")}
    return int(to_record(weights).count_bytes())


def _bytes_per_round(cfg: ExperimentConfig, run_dir: Path, num_regions: int) -> float:
    import strategies
    from strategies.interface import view

    needs = view(strategies.get(cfg.strategy.name, **cfg.strategy.params)).needs
    n_train = _sample_size(num_regions, needs.fraction_train, needs.min_train_nodes)
    n_eval = _sample_size(num_regions, needs.fraction_evaluate, needs.min_evaluate_nodes)
    return float(_model_bytes(run_dir) * (2 * n_train + n_eval))


def _measured_bytes(run_dir: Path) -> pd.Series | None:
    """Bytes sent + received per round, as counted on the wire (``rounds.csv``), if any.

    The ServerApp's counting Grid (:mod:`fedglobal.server.comm`) adds up every record of
    every message (weights, configs, metrics); older run folders lack the file.
    """
    path = run_dir / "rounds.csv"
    if not path.is_file():
        return None
    rounds = pd.read_csv(path)
    if not {"round", "bytes_sent", "bytes_received"} <= set(rounds.columns):
        return None
    total = rounds["bytes_sent"] + rounds["bytes_received"]
    return pd.Series(total.to_numpy(dtype=float), index=rounds["round"].to_numpy())


def _per_round(
    cell: Cell, suite: Suite, history: pd.DataFrame, metric: str, round_end_s: Sequence[float]
) -> tuple[pd.DataFrame, dict[str, float]]:
    """results.csv rows of one run, and the final per-region headline metric."""
    h = history
    test = h[h.split == "test"]
    pooled = test[test.region == "all"].pivot_table(
        index="round", columns="metric", values="value", aggfunc="first"
    )
    if metric not in pooled.columns:
        raise FedGlobalError(
            f"the history has no pooled test {metric!r} (metrics: {', '.join(pooled.columns)}); "
            "set the suite's or dataset's metric"
        )
    regional = test[(test.region != "all") & (test.metric == metric)]
    by_round = regional.groupby("round")["value"]
    lower = metric in LOWER_IS_BETTER
    worst = by_round.max() if lower else by_round.min()
    train = h[(h.split == "train") & (h.region == "all") & (h.metric == "loss")]
    train_loss = train.set_index("round")["value"]
    rounds = pooled.index.to_numpy()
    rows = pd.DataFrame(
        {
            "round": rounds,
            "metric": metric,
            "value": pooled[metric].to_numpy(),
            "test_loss": pooled["loss"].reindex(rounds).to_numpy()
            if "loss" in pooled
            else math.nan,
            "train_loss": train_loss.reindex(rounds).to_numpy(),
            "region_worst": worst.reindex(rounds).to_numpy(),
            "region_mean": by_round.mean().reindex(rounds).to_numpy(),
        }
    )
    for m in pooled.columns:
        rows[f"test_{m}"] = pooled[m].to_numpy()
    if len(round_end_s) == len(rows):
        rows["elapsed_s"] = list(round_end_s)
    last = regional[regional["round"] == regional["round"].max()]
    final_regions = {str(r): float(v) for r, v in zip(last.region, last.value, strict=True)}
    return rows, final_regions


def _experiment(suite: Suite, cell: Cell) -> dict[str, Any]:
    """The cell's experiment: ``derived:`` sources materialised (see
    :mod:`fedglobal.benchmark.datasets`); per-run TensorBoard files and plots off unless
    the suite asks (the benchmark draws its own plots, and they cost seconds per run)."""
    import dataclasses

    from fedglobal.benchmark.datasets import resolve_source

    raw = suite.experiment(cell)
    data = raw.get("data", {})
    if isinstance(data.get("source"), str):
        data["source"] = resolve_source(data["source"])
    if "output" in {f.name for f in dataclasses.fields(ExperimentConfig)}:
        output = raw.setdefault("output", {})
        output.setdefault("tensorboard", False)
        output.setdefault("plots", False)
    return raw


def run_cell(
    cell: Cell,
    suite: Suite,
    cells_dir: Path,
    *,
    overrides: Sequence[str] = (),
) -> CellResult:
    """Run one cell; never raises for a failure of the cell itself (returns status failed)."""
    started = time.time()
    cpu_started = time.process_time()
    metric = ""
    try:
        cfg = ExperimentConfig.from_dict(_experiment(suite, cell), base_dir=suite.base_dir)
        if overrides:
            cfg = cfg.replace(overrides)
        metric = suite.metric_for(cell.dataset, cfg.data.task)
        kind = cell.strategy.kind
        if kind == "federated":
            from fedglobal.simulation import simulate

            with _attack(cell, cfg, cells_dir):
                result = simulate(cfg, output_dir=cells_dir, quiet=True)
            history, summary, run_dir = result.history, result.summary, result.run_dir
            num_regions = int(summary.get("num_regions") or len(summary.get("regions", [])))
            measured = _measured_bytes(run_dir)
            if measured is not None and (measured.index > 0).any():
                bytes_round = float(measured[measured.index > 0].mean())
            else:
                measured = None
                bytes_round = _bytes_per_round(cfg, run_dir, num_regions)
        else:
            from fedglobal.benchmark import baselines

            run_dir = cells_dir / f"{cfg.experiment.name}"
            if run_dir.exists():
                shutil.rmtree(run_dir)
            if kind == "local-only":
                baseline = baselines.run_local_only(cfg, run_dir)
                bytes_round = 0.0
            else:
                import strategies
                from strategies.interface import view

                needs = view(strategies.get(cfg.strategy.name, **cfg.strategy.params)).needs
                n = len(baseline_regions(cfg))
                per_round = _sample_size(n, needs.fraction_train, needs.min_train_nodes)
                baseline = baselines.run_centralised(cfg, run_dir, clients_per_round=per_round)
                bytes_round = math.nan
            history, summary = baseline.history, baseline.summary
            measured = None
        rows, final_regions = _per_round(
            cell, suite, history, metric, summary.get("round_end_s", [])
        )
        if measured is not None:
            rows["bytes_per_round"] = measured.reindex(rows["round"].to_numpy()).to_numpy()
            rows["bytes_source"] = "measured"
        else:
            rows["bytes_per_round"] = bytes_round
            rows["bytes_source"] = "computed" if kind == "federated" else "none"
        notes = []
        for key in ("failed_replies", "rejected_updates"):
            if summary.get(key):
                notes.append(f"{len(summary[key])} {key.replace('_', ' ')}")
        return CellResult(
            cell=cell,
            status="ok",
            metric=metric,
            rows=rows,
            final_regions=final_regions,
            wall_time_s=time.time() - started,
            cpu_time_s=time.process_time() - cpu_started,
            bytes_per_round=bytes_round,
            run_dir=run_dir,
            notes=notes,
        )
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if not isinstance(exc, FedGlobalError):
            log.debug("cell %s failed:\n%s", cell.key, traceback.format_exc())
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return CellResult(
            cell=cell,
            status="failed",
            metric=metric,
            error=f"{type(exc).__name__}: {message}"[:500],
            wall_time_s=time.time() - started,
            cpu_time_s=time.process_time() - cpu_started,
        )


def baseline_regions(cfg: ExperimentConfig) -> list[str]:
    from fedglobal import data

    return data.list_regions(cfg)


# -- the grid ----------------------------------------------------------------------------


def _in_order(cells: Sequence[Cell], done: Sequence[CellResult]) -> list[CellResult]:
    """Results in the grid's order (workers finish in any order)."""
    rank = {id(c): i for i, c in enumerate(cells)}
    keys = {c.key: i for i, c in enumerate(cells)}
    return sorted(done, key=lambda r: rank.get(id(r.cell), keys.get(r.cell.key, 0)))


_events: Any = None


def _worker_init(events: Any, threads: int) -> None:
    """A worker process: report through ``events``; share the CPUs with the other workers."""
    global _events
    _events = events
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _worker_run(
    cells: list[Cell], suite: Suite, cells_dir: Path, overrides: Sequence[str]
) -> list[CellResult]:
    results = []
    with _quiet_flower():
        for cell in cells:
            _events.put(("start", cell))
            result = run_cell(cell, suite, cells_dir, overrides=overrides)
            _events.put(("done", result))
            results.append(result)
    return results


def _run_parallel(
    cells: Sequence[Cell],
    suite: Suite,
    cells_dir: Path,
    overrides: Sequence[str],
    jobs: int,
    on_start: Any,
    on_done: Any,
) -> None:
    """Run (dataset, seed) groups of cells in ``jobs`` spawned worker processes."""
    import multiprocessing
    import os
    import queue
    from concurrent.futures import ProcessPoolExecutor, wait

    groups: dict[tuple[str, int], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.dataset.label, cell.seed), []).append(cell)
    ctx = multiprocessing.get_context("spawn")
    events = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    reported: set[str] = set()

    def drain(timeout: float) -> None:
        while True:
            try:
                kind, payload = events.get(timeout=timeout)
            except queue.Empty:
                return
            timeout = 0.0
            if kind == "start":
                on_start(payload)
            else:
                reported.add(payload.cell.key)
                on_done(payload)

    pool = ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(events, threads)
    )
    try:
        futures = {
            pool.submit(_worker_run, group, suite, cells_dir, list(overrides)): group
            for group in groups.values()
        }
        pending = set(futures)
        while pending:
            drain(0.2)
            finished, pending = wait(pending, timeout=0)
            for future in finished:
                if future.exception() is not None:  # the worker died (out of memory...)
                    drain(0.5)
                    for cell in futures[future]:
                        if cell.key not in reported:
                            error = f"worker process failed: {future.exception()!r}"
                            on_done(CellResult(cell=cell, status="failed", error=error[:500]))
        drain(0.5)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _result_frame(suite: Suite, cells: Sequence[CellResult]) -> pd.DataFrame:
    frames = []
    for c in cells:
        ident = {
            "suite": suite.name,
            "dataset": c.cell.dataset.label,
            "condition": c.cell.condition.label,
            "strategy": c.cell.strategy.label,
            "kind": c.cell.strategy.kind,
            "seed": c.cell.seed,
            "status": c.status,
            "error": c.error,
            "run_wall_s": c.wall_time_s,
            "run_cpu_s": c.cpu_time_s,
            "run_dir": "" if c.run_dir is None else str(c.run_dir),
        }
        if c.ok:
            frame = c.rows.copy()
            for key, value in reversed(ident.items()):
                frame.insert(0, key, value)
        else:
            frame = pd.DataFrame([{**ident, "metric": c.metric}])
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    extra = sorted(c for c in out.columns if c not in RESULT_COLUMNS)
    for col in RESULT_COLUMNS:
        if col not in out.columns:
            out[col] = math.nan
    return out[RESULT_COLUMNS + extra]


@contextlib.contextmanager
def _quiet_flower() -> Iterator[None]:
    """Keep Flower's per-round INFO/WARNING lines (dropped stragglers...) out of the display."""

    class _ErrorsOnly(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return record.levelno >= logging.ERROR

    flwr_logger = logging.getLogger("flwr")
    ours = logging.getLogger("fedglobal.engines")
    flt = _ErrorsOnly()
    flwr_logger.addFilter(flt)
    ours.addFilter(flt)
    try:
        yield
    finally:
        flwr_logger.removeFilter(flt)
        ours.removeFilter(flt)


def output_dir_for(suite: Suite, root: str | Path = "runs") -> Path:
    """``<root>/bench-<name>`` (``-full`` at the full scale)."""
    return Path(root) / f"bench-{suite.name}{'-full' if suite.full else ''}"


def run_benchmark(
    suite: str | Path | Suite,
    *,
    full: bool = False,
    seeds: Sequence[int] | None = None,
    only: Sequence[str] = (),
    overrides: Sequence[str] = (),
    output_dir: str | Path = "runs",
    quiet: bool = False,
    plots: bool = True,
    jobs: int = 1,
) -> BenchmarkResult:
    """Run every cell of a suite and write the results folder.

    Args:
        suite: a suite file or a parsed :class:`Suite`.
        full: the suite's ``[full]`` scale (ignored for a parsed Suite).
        seeds: replace the suite's seeds.
        only: ``--only`` filters (see :func:`select_cells`).
        overrides: ``section.key=value`` applied to every cell's experiment.
        output_dir: the folder under which ``bench-<name>/`` is written.
        quiet: no progress display.
        plots: write the plots (matplotlib, Agg backend).
        jobs: worker processes. 1 (the default) runs every cell in this process. With
            more, each (dataset, seed) group of cells runs in one worker, in order, so
            the workers' caches still serve every strategy of the group.
    """
    from fedglobal.benchmark import plots as plotting
    from fedglobal.benchmark import summary as summarize
    from fedglobal.benchmark.progress import BenchProgress

    if not isinstance(suite, Suite):
        suite = load_suite(suite, full=full, seeds=seeds)
    elif seeds is not None:
        import dataclasses

        suite = dataclasses.replace(suite, seeds=tuple(seeds))
    for text in overrides:  # fail before running anything
        from fedglobal.config import parse_override

        parse_override(text)
    cells = select_cells(suite.cells(), only)
    out = output_dir_for(suite, output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells_dir = out / "cells"
    if cells_dir.exists():
        shutil.rmtree(cells_dir)
    cells_dir.mkdir()
    shutil.copyfile(suite.path, out / "suite.toml") if suite.path.is_file() else None
    (out / "run.json").write_text(
        json.dumps(
            {
                "suite": suite.name,
                "full": suite.full,
                "seeds": list(suite.seeds),
                "only": list(only),
                "overrides": list(overrides),
                "cells": len(cells),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            },
            indent=2,
        ),
        encoding="utf-8",
    )

    started = time.time()
    done: list[CellResult] = []
    progress = BenchProgress(len(cells), suite.name, quiet=quiet)

    def finished(result: CellResult) -> None:
        done.append(result)
        progress.finish(result)
        _result_frame(suite, _in_order(cells, done)).to_csv(out / "results.csv", index=False)

    try:
        with progress, _quiet_flower():
            if jobs <= 1:
                for cell in cells:
                    progress.start(cell)
                    finished(run_cell(cell, suite, cells_dir, overrides=overrides))
            else:
                _run_parallel(cells, suite, cells_dir, overrides, jobs, progress.start, finished)
    finally:
        done = _in_order(cells, done)
        results = _result_frame(suite, done)
        results.to_csv(out / "results.csv", index=False)
        table = summarize.summary_table(suite, done)
        wall = time.time() - started
        summarize.write_summary(suite, table, out, wall_time_s=wall, cells=done)
        written = plotting.write_plots(suite, results, done, out / "plots") if plots else []
    return BenchmarkResult(
        suite=suite,
        out_dir=out,
        results=results,
        summary=table,
        cells=done,
        wall_time_s=wall,
        plots=written,
    )
