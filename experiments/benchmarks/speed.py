"""Simulation speed and scale, measured side by side (issue 5). Prints every comparison as a ratio.

    .venv/bin/python experiments/benchmarks/speed.py            # everything (< 10 min on 2 cores)
    .venv/bin/python experiments/benchmarks/speed.py --only cohort,aggregation
    .venv/bin/python experiments/benchmarks/speed.py --skip ray --json runs/speed.json

The workload of goals 1-3 is the issue's: multinomial logistic regression on
FedProx Synthetic(0.5, 0.5) (30 devices), 10 rounds, 10 of 30 devices trained
per round, E = 20 epochs, batch 10, SGD lr 0.01, every device evaluated each round.

Sections (each runs in fresh subprocesses, so start-up and memory are its own):

- ``defaults``: what users run without flags (issue 15). The quickstart, 20
  rounds, ``fedglobal simulate`` launch to exit, against the floor every
  TensorFlow program pays, ``python -c "import tensorflow, keras"``, timed
  interleaved; and the Fashion-MNIST CNN workload (the fashion_mnist_dirichlet
  suite's CNN without batch normalisation, 20 Dirichlet clients, 10 rounds, 10
  per round, 1 epoch, B = 32, Adam) with the default settings against
  ``client.cohort = false`` (Keras ``fit`` region by region);
- ``hardware``: cohort training's achieved FLOP/s on W1 and on the CNN, as a
  fraction of a dense float32 matmul's FLOP/s measured in the same process
  (FLOPs: the model's forward FLOPs per example, counted from the Keras model
  by ``fedglobal.geo.compute``, times 3 for a training step, times the
  examples processed);

- ``engines``: the in-process engine (cohort training) against the Ray engine
  (``fedglobal simulate --engine ray``: Flower's Simulation Engine on Ray,
  started and stopped by fedglobal), wall time including start-up, and the final
  accuracy (in-process over 3 seeds, to show the seed noise). Both are timed as a
  user runs them, the ``fedglobal simulate`` command from launch to exit; the
  in-process command five times with an empty XLA compile cache and five times
  with a warm one (fedglobal/runtime/compile_cache.py; median and range: these
  machines are noisy);
- ``cohort``: sequential training (Keras ``fit`` on the compiled-once model) against
  cohort training (one XLA program per round), time spent training and whole run;
- ``workers``: the sequential path with ``experiment.workers = 2`` against 0;
- ``scale``: 100, 1,000 and 10,000 regions of 200 rows, 10% trained and evaluated
  per round, the data on disk (``data.storage = "disk"``): peak memory (RSS) and
  seconds per round; 10,000 regions sampling as many as 1,000 did; 10,000 regions
  with the data in memory;
- ``aggregation``: streaming FedAvg of 100 updates of a 10M-parameter model
  against numpy reading the bytes once, and against Flower's
  ``aggregate_arrayrecords``; peak extra memory (tracemalloc);
- ``communication``: array bytes per round of several strategies, and of FedAvg
  with float16 / int8 / top-k updates (error feedback): ratio and accuracy cost.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
SECTIONS = (
    "defaults",
    "hardware",
    "engines",
    "cohort",
    "workers",
    "scale",
    "aggregation",
    "communication",
)

WORKLOAD = {
    "experiment": {"name": "speed", "seed": 0, "rounds": 10},
    "data": {
        "source": "synthetic:fedprox",
        "task": "classification",
        "num_regions": 30,
        "test_fraction": 0.2,
        "synthetic_alpha": 0.5,
        "synthetic_beta": 0.5,
    },
    "model": {"name": "logistic"},
    "client": {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 10, "epochs": 20},
    "strategy": {
        "name": "fedavg",
        "fraction_train": 0.3333,
        "min_train_clients": 10,
        "fraction_evaluate": 1.0,
        "min_evaluate_clients": 30,
        "min_available_clients": 30,
    },
    "output": {"tensorboard": False, "plots": False},
}


# -- helpers ---------------------------------------------------------------------------


def _merge(base: dict, **sections: dict) -> dict:
    out = {k: dict(v) for k, v in base.items()}
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


def _toml(raw: dict, folder: Path, name: str) -> Path:
    import tomli_w

    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def _load() -> str:
    try:
        one, five, _ = os.getloadavg()
        return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"
    except OSError:
        return "load average unknown"


def _timed(
    command: list[str], what: str, timeout: float = 1800, cache: Path | None = None
) -> tuple[str, float]:
    """Run ``command`` from the repository root; its stdout and wall seconds.

    XLA programs are compiled from scratch (an empty compile cache of its own,
    fedglobal/runtime/compile_cache.py) unless ``cache`` names a folder to share.
    """
    with tempfile.TemporaryDirectory(prefix="fedglobal-xla-") as cold:
        env = {
            **os.environ,
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONUNBUFFERED": "1",
            "FEDGLOBAL_COMPILE_CACHE": str(cache or cold),
        }
        started = time.perf_counter()
        out = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
        )
        wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return out.stdout, wall


def _child(args: list[str], timeout: float = 1800) -> dict:
    """Run this script as a child; return its last JSON line plus the wall time."""
    stdout, wall = _timed(
        [PYTHON, str(Path(__file__).resolve()), *args], f"child {args[:2]}", timeout
    )
    lines = [ln for ln in stdout.splitlines() if ln.startswith(("{", "["))]
    result = json.loads(lines[-1])
    if isinstance(result, list):
        result = {"runs": result}
    result["wall_s"] = round(wall, 2)
    return result


def _ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.1f}x" if fast > 0 else "n/a"


def _print(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    sys.stdout.flush()


# -- children: one run each --------------------------------------------------------------


def child_run(configs: list[str], output_dir: str, engine: str) -> None:
    """simulate() each config in this process; prints a JSON list (one entry per run).

    Times: ``import_s`` (fedglobal and the apps, first run only), ``run_s`` (the
    simulate call), ``train_s`` (delivering train messages, in the run), plus the
    final pooled accuracy, the per-round rows of rounds.csv and the process's
    peak resident memory so far.
    """
    import resource

    started = time.perf_counter()
    import fedglobal
    from fedglobal.engines import load_component, pool

    load_component("fedglobal.server.app:app")
    load_component("clients.app:app")
    imported = time.perf_counter()
    train = {"seconds": 0.0, "depth": 0}

    def timed(cls: Any, name: str) -> None:
        original = getattr(cls, name)

        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            train["depth"] += 1  # the pool's deliver calls this process's: count once
            try:
                return original(self, *args, **kwargs)
            finally:
                train["depth"] -= 1
                items = args[0] if args else []
                messages = [m if not isinstance(m, tuple) else m[2] for m in items]
                is_train = any(m.metadata.message_type == "train" for m in messages)
                if train["depth"] == 0 and is_train:
                    train["seconds"] += time.perf_counter() - t0

        setattr(cls, name, wrapper)

    timed(pool.LocalNodes, "deliver")
    timed(pool.WorkerPool, "deliver")
    out = []
    for i, config in enumerate(configs):
        train["seconds"] = 0.0
        t0 = time.perf_counter()
        result = fedglobal.simulate(config, engine=engine, output_dir=output_dir, quiet=True)
        done = time.perf_counter()
        summary = json.loads((result.run_dir / "summary.json").read_text())
        rounds = []
        rounds_csv = result.run_dir / "rounds.csv"
        if rounds_csv.is_file():
            import pandas as pd

            rounds = pd.read_csv(rounds_csv).to_dict("records")
        accuracy = result.metric("accuracy")
        data_mb, disk_mb = _dataset_mb(config) if "scale" in Path(config).name else (None, None)
        out.append(
            {
                "import_s": round(imported - started, 2) if i == 0 else 0.0,
                "run_s": round(done - t0, 2),
                "train_s": round(train["seconds"], 2),
                "accuracy": float(accuracy.iloc[-1]),
                "max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "rounds": rounds,
                "comm": summary.get("comm", {}),
                "regions": summary.get("num_regions"),
                "dataset_mb": data_mb,
                "dataset_disk_mb": disk_mb,
            }
        )
    print(json.dumps(out))


def _dataset_mb(config: str) -> tuple[float, float]:
    """``(MB in memory, MB on disk)`` this process holds of the dataset itself, in the
    data layer's per-process caches: the cleaned table, the regions' row positions,
    the encoded arrays and the statistics' label codes (arrays that are views of the
    table are not counted twice); with ``data.storage = "disk"`` the column and
    encoding files (what stays in memory is per-region offsets and vocabularies).
    (The table as read is not kept once cleaned.)"""
    import numpy as np

    from fedglobal.config import load_config
    from fedglobal.data import regions

    def owned(item: Any) -> int:
        if isinstance(item, np.ndarray):
            return item.nbytes if item.base is None else 0
        if isinstance(item, dict):
            return sum(owned(v) for v in item.values())
        if isinstance(item, tuple | list):
            return sum(owned(v) for v in item)
        return 0

    prepared = regions.prepared_source(load_config(config))
    total = owned(dict(prepared.groups)) if prepared.store is None else 0
    if prepared.frame is not None:
        total += prepared.frame.memory_usage(deep=True).sum()
    total += sum(owned(built) for held, built in regions._cache.values() if held is prepared)
    disk = 0
    if prepared.store is not None:
        disk = sum(f.stat().st_size for f in prepared.store.folder.iterdir())
    return round(float(total) / 2**20, 1), round(disk / 2**20, 1)


def child_aggregation(clients: int, params: int) -> None:
    """Goal 5, in its own process: prints JSON timings and memory."""
    import gc
    import tracemalloc

    import numpy as np
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from strategies.aggregate import weighted_average
    from strategies.compression import array_view

    rng = np.random.default_rng(0)
    side = int((params * 0.9) ** 0.5)
    shapes = {
        "hidden/kernel": (side, side),
        "hidden/bias": (side,),
        "output/kernel": (params - side * side - side - 1000, 1),
        "output/bias": (1000,),
    }
    template = {k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
    nbytes = sum(v.nbytes for v in template.values())
    weights = [float(rng.integers(50, 500)) for _ in range(clients)]

    def best(fn: Any, repeat: int = 3) -> float:
        """Least CPU time of ``repeat`` calls (single-threaded numpy: CPU time is the
        work done, which a loaded machine does not inflate as it does wall time)."""
        times = []
        for _ in range(repeat):
            gc.collect()
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return min(times)

    # (a) in-memory updates: our streaming average against numpy reading them once
    updates = [
        (f"c{i}", {k: v + np.float32(i * 1e-3) for k, v in template.items()}, weights[i])
        for i in range(clients)
    ]
    read_once = best(
        lambda: [np.add.reduce(a, axis=None) for _, d, _ in updates for a in d.values()]
    )
    checked = best(lambda: weighted_average(updates))
    unchecked = best(lambda: weighted_average(updates, validate=False))
    tracemalloc.start()
    weighted_average(updates)
    _, peak_inmem = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    updates.clear()
    gc.collect()

    # (b) the same updates as Flower ArrayRecords: Flower's aggregate_arrayrecords
    # against ours fed one decoded record at a time (as strategies.FedAvg does)
    records = [
        RecordDict(
            {
                "arrays": ArrayRecord(
                    {k: Array(v + np.float32(i * 1e-3)) for k, v in template.items()}
                ),
                "metrics": MetricRecord({"num-examples": weights[i]}),
            }
        )
        for i in range(clients)
    ]

    def ours(decode: Any) -> Any:
        return weighted_average(
            (
                (f"c{i}", {k: decode(a) for k, a in r["arrays"].items()}, weights[i])
                for i, r in enumerate(records)
            )
        )

    flower = best(lambda: aggregate_arrayrecords(records, "num-examples"))
    ours_views = best(lambda: ours(array_view))
    ours_copies = best(lambda: ours(lambda a: a.numpy()))
    tracemalloc.start()
    ours(array_view)
    _, peak_ours = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    tracemalloc.start()
    aggregate_arrayrecords(records, "num-examples")
    _, peak_flower = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        json.dumps(
            {
                "clients": clients,
                "params": sum(v.size for v in template.values()),
                "model_mb": round(nbytes / 2**20, 1),
                "read_once_s": round(read_once, 3),
                "ours_checked_s": round(checked, 3),
                "ours_unchecked_s": round(unchecked, 3),
                "peak_extra_inmemory_mb": round(peak_inmem / 2**20, 1),
                "flower_records_s": round(flower, 3),
                "ours_records_s": round(ours_views, 3),
                "ours_records_numpy_s": round(ours_copies, 3),
                "peak_extra_ours_records_mb": round(peak_ours / 2**20, 1),
                "peak_extra_flower_records_mb": round(peak_flower / 2**20, 1),
            }
        )
    )


# -- sections ----------------------------------------------------------------------------


def _runs(
    raws: list[dict], folder: Path, name: str, engine: str = "inprocess", timeout: float = 1800
) -> list[dict]:
    """Run the experiments in one child process (start-up paid once, by the first)."""
    paths = [str(_toml(raw, folder, f"{name}-{i}")) for i, raw in enumerate(raws)]
    out = _child(["run", *paths, "--output-dir", str(folder / "runs"), "--engine", engine], timeout)
    runs = out["runs"]
    runs[0]["wall_s"] = out["wall_s"]  # this process's whole life: start-up included
    return runs


def _run(raw: dict, folder: Path, name: str, engine: str = "inprocess", timeout: float = 1800):
    return _runs([raw], folder, name, engine, timeout)[0]


def _console(raw: dict, folder: Path, name: str, engine: str, cache: Path | None = None) -> dict:
    """``fedglobal simulate`` as a user runs it: wall time of the whole command
    (compile cache: empty, or ``cache``)."""
    config = _toml(raw, folder, name)
    script = Path(PYTHON).with_name("fedglobal")
    command = [str(script)] if script.is_file() else [PYTHON, "-m", "fedglobal.cli"]
    out_dir = folder / "cli-runs" / name
    args = ["simulate", str(config), "--engine", engine, "--quiet", "--output-dir", str(out_dir)]
    _, wall = _timed([*command, *args], f"fedglobal simulate --engine {engine}", cache=cache)
    (run_dir,) = [p for p in out_dir.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"wall_s": round(wall, 2), "accuracy": summary["final"]["test/all"]["accuracy"]}


def _spread(runs: list[dict]) -> tuple[float, list[float]]:
    walls = sorted(r["wall_s"] for r in runs)
    return walls[len(walls) // 2], walls


def section_engines(folder: Path, results: dict, skip_ray: bool, repeats: int = 5) -> None:
    cohort = WORKLOAD  # the default settings: cohort training ("auto")
    warm_cache = folder / "xla-cache"  # filled by the first cold run, then reused
    cold = [
        _console(cohort, folder, f"cohort-s0-cold{i}", "inprocess", warm_cache if i == 0 else None)
        for i in range(repeats)
    ]
    warm = [
        _console(cohort, folder, f"cohort-s0-warm{i}", "inprocess", warm_cache)
        for i in range(repeats)
    ]
    seeds = [cold[0]]
    for seed in (1, 2):
        raw = _merge(cohort, experiment={"seed": seed})
        seeds.append(_console(raw, folder, f"cohort-s{seed}", "inprocess", warm_cache))
    results["engines"] = {"inprocess_cold": cold, "inprocess_warm": warm, "inprocess_seeds": seeds}
    spreads = {"cold": _spread(cold), "warm": _spread(warm)}
    rows = []
    for kind, what in (("cold", "empty compile cache"), ("warm", "compile cache warm")):
        median, walls = spreads[kind]
        rows.append(
            (
                f"in-process, cohort, {what} ({repeats} runs)",
                f"{median:.1f} s median wall incl. start-up ("
                + " / ".join(f"{w:.1f}" for w in walls)
                + ")",
            )
        )
    rows.append(
        ("  final accuracy, seeds 0/1/2", " / ".join(f"{r['accuracy']:.4f}" for r in seeds))
    )
    if not skip_ray:
        ray = _console(WORKLOAD, folder, "ray", "ray")
        results["engines"]["ray"] = ray
        rows += [
            ("Ray engine (seed 0)", f"{ray['wall_s']:.1f} s wall incl. start-up"),
            ("  final accuracy", f"{ray['accuracy']:.4f}"),
        ]
        for kind in ("cold", "warm"):
            median, walls = spreads[kind]
            rows += [
                (f"RATIO Ray / in-process {kind} (median)", _ratio(ray["wall_s"], median)),
                (
                    "  range (slowest / fastest in-process)",
                    f"{_ratio(ray['wall_s'], walls[-1])} / {_ratio(ray['wall_s'], walls[0])}",
                ),
            ]
    _print("1. engines: the issue's workload, `fedglobal simulate` wall time incl. start-up", rows)


def section_cohort(folder: Path, results: dict) -> None:
    seq = _run(_merge(WORKLOAD, client={"cohort": False}), folder, "sequential")
    coh = _run(WORKLOAD, folder, "cohort")  # the default: cohort = "auto"
    results["cohort"] = {"sequential": seq, "cohort": coh}
    _print(
        "2. cohort training vs the sequential path (same workload, in-process)",
        [
            ("sequential: training / run / wall", _times(seq)),
            ("cohort:     training / run / wall", _times(coh)),
            ("RATIO training time", _ratio(seq["train_s"], coh["train_s"])),
            ("RATIO whole run (no start-up)", _ratio(seq["run_s"], coh["run_s"])),
            ("final accuracy seq / cohort", f"{seq['accuracy']:.4f} / {coh['accuracy']:.4f}"),
        ],
    )


CNN_WORKLOAD = {
    "experiment": {"name": "cnn", "seed": 0, "rounds": 10},
    "data": {
        "source": "fashion-mnist:train:10000",
        "target": "label",
        "task": "classification",
        "partition": "dirichlet",
        "num_regions": 20,
        "test_fraction": 0.2,
        "min_region_rows": 20,
        "rare_regions": "drop",
    },
    "model": {"name": "cnn", "filters": [8, 16], "hidden": [32], "batch_norm": False},
    "client": {"epochs": 1, "batch_size": 32, "optimizer": "adam", "learning_rate": 0.002},
    "strategy": {"fraction_train": 0.5, "min_train_clients": 2, "min_available_clients": 2},
    "output": {"tensorboard": False, "plots": False},
}


def _floor_s() -> float:
    """Wall seconds of ``python -c "import tensorflow, keras"``: every TF program pays it."""
    _, wall = _timed([PYTHON, "-c", "import tensorflow, keras"], "import tensorflow, keras")
    return wall


def section_defaults(folder: Path, results: dict, repeats: int = 3) -> None:
    quickstart = ROOT / "experiments" / "quickstart.toml"
    script = Path(PYTHON).with_name("fedglobal")
    command = [str(script)] if script.is_file() else [PYTHON, "-m", "fedglobal.cli"]
    floors, runs = [], []
    for i in range(repeats):  # interleaved: the machine's load moves both alike
        floors.append(_floor_s())
        out_dir = folder / "quickstart" / str(i)
        args = ["simulate", str(quickstart), "--quiet", "--output-dir", str(out_dir)]
        _, wall = _timed([*command, *args], "fedglobal simulate quickstart")
        (run_dir,) = [p for p in out_dir.iterdir() if p.is_dir()]
        summary = json.loads((run_dir / "summary.json").read_text())
        runs.append({"wall_s": round(wall, 2), "r2": summary["final"]["test/all"]["r2"]})
    cnn_default, cnn_keras = [], []
    for i in range(repeats):
        cnn_default.append(_console(CNN_WORKLOAD, folder, f"cnn-default{i}", "inprocess"))
        keras_fit = _merge(CNN_WORKLOAD, client={"cohort": False})
        cnn_keras.append(_console(keras_fit, folder, f"cnn-kerasfit{i}", "inprocess"))
    results["defaults"] = {
        "import_floor_s": floors,
        "quickstart": runs,
        "cnn_default": cnn_default,
        "cnn_cohort_false": cnn_keras,
    }
    floor, _ = _spread([{"wall_s": f} for f in floors])
    quick, walls = _spread(runs)
    cnn, cnn_walls = _spread(cnn_default)
    seq, seq_walls = _spread(cnn_keras)

    def spread(walls: list[float]) -> str:
        return " / ".join(f"{w:.1f}" for w in walls)

    _print(
        f"0. default settings ({repeats} interleaved runs each, median and all)",
        [
            ('python -c "import tensorflow, keras"', f"{floor:.1f} s ({spread(sorted(floors))})"),
            ("quickstart, 20 rounds, defaults", f"{quick:.1f} s ({spread(walls)})"),
            ("RATIO quickstart / import floor", _ratio(quick, floor)),
            ("  pooled R² (every run)", " / ".join(f"{r['r2']:.4f}" for r in runs)),
            ("CNN workload, defaults", f"{cnn:.1f} s ({spread(cnn_walls)})"),
            ("CNN workload, cohort = false", f"{seq:.1f} s ({spread(seq_walls)})"),
            ("RATIO CNN cohort = false / defaults", _ratio(seq, cnn)),
            (
                "  accuracy defaults / cohort = false",
                f"{cnn_default[0]['accuracy']:.4f} / {cnn_keras[0]['accuracy']:.4f}",
            ),
        ],
    )


def child_hardware(config: str, output_dir: str) -> None:
    """A dense matmul's FLOP/s, then one run's cohort training FLOP/s (JSON line)."""
    import tensorflow as tf

    import fedglobal
    from clients import cohort
    from fedglobal.geo.compute import TRAIN_TO_FORWARD, forward_flops_per_example

    n = 1024
    a = tf.random.stateless_normal([n, n], seed=[1, 2])
    matmul = tf.function(lambda x: tf.matmul(x, x), jit_compile=True)
    matmul(a).numpy()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(10):
            out = matmul(a)
        out.numpy()
        best = min(best, (time.perf_counter() - t0) / 10)
    peak = 2 * n**3 / best

    calls: list[dict] = []
    original = cohort.CohortTrainer.fit

    def fit(self: Any, jobs: Any) -> Any:
        t0 = time.perf_counter()
        out = original(self, jobs)
        seconds = time.perf_counter() - t0
        examples = 0
        for job in jobs:
            plan, rows = job.plan, len(job.client.arrays.x_train)
            examples += plan.steps * plan.batch_size if plan.repeats else plan.epochs * rows
        flops = TRAIN_TO_FORWARD * forward_flops_per_example(self.inner) * examples
        calls.append({"seconds": seconds, "flops": flops, "mode": self.mode})
        return out

    cohort.CohortTrainer.fit = fit
    fedglobal.simulate(config, output_dir=output_dir, quiet=True)
    print(json.dumps({"peak_flops": peak, "calls": calls}))


def section_hardware(folder: Path, results: dict) -> None:
    rows = []
    out: dict[str, Any] = {}
    for name, raw in (("W1", WORKLOAD), ("CNN", CNN_WORKLOAD)):
        config = _toml(raw, folder, f"hardware-{name}")
        r = _child(["hardware", str(config), "--output-dir", str(folder / "runs")])
        calls = r["calls"]
        if not calls:
            rows.append((f"{name}", "no cohort training (fell back to Keras fit)"))
            continue
        flops = sum(c["flops"] for c in calls)
        seconds = sum(c["seconds"] for c in calls)
        warm = calls[1:] or calls  # the first call compiles the program
        warm_rate = sum(c["flops"] for c in warm) / sum(c["seconds"] for c in warm)
        out[name] = {**r, "achieved": flops / seconds, "achieved_warm": warm_rate}
        peak = r["peak_flops"]
        rows += [
            (f"{name}: dense matmul peak (1024², XLA)", f"{peak / 1e9:.1f} GFLOP/s"),
            (
                f"{name}: cohort training ({calls[0]['mode']}), all rounds",
                f"{flops / seconds / 1e9:.2f} GFLOP/s = {flops / seconds / peak:.1%} of peak",
            ),
            (
                f"{name}:   without the first (compiling) round",
                f"{warm_rate / 1e9:.2f} GFLOP/s = {warm_rate / peak:.1%} of peak",
            ),
        ]
    results["hardware"] = out
    _print("0b. close to the hardware: cohort training's FLOP/s against a dense matmul", rows)


def _rounds_s(r: dict) -> float:
    """Seconds of rounds 1.. (round 0, the schema and first evaluation, waits for the
    spawned workers to import TensorFlow)."""
    return sum(row["seconds"] for row in r["rounds"] if row["round"] >= 1)


def _times(r: dict) -> str:
    return f"{r['train_s']:.1f} s / {r['run_s']:.1f} s / {r['wall_s']:.1f} s"


def section_workers(folder: Path, results: dict) -> None:
    sequential = _merge(WORKLOAD, client={"cohort": False})
    seq = results.get("cohort", {}).get("sequential") or _run(sequential, folder, "sequential")
    two = _run(_merge(sequential, experiment={"workers": 2}), folder, "workers2")
    # Wall time as a user runs it: the timed child above imports the apps before the
    # run starts (to time the import), so its workers=2 worker only starts importing
    # TensorFlow after that; `fedglobal simulate` starts the worker first.
    cli0 = _console(sequential, folder, "workers0-cli", "inprocess")
    cli2 = _console(
        _merge(sequential, experiment={"workers": 2}), folder, "workers2-cli", "inprocess"
    )
    results["workers"] = {"workers0": seq, "workers2": two, "cli0": cli0, "cli2": cli2}
    _print(
        "3. worker pool, sequential path: workers = 2 vs 0",
        [
            ("workers=0: training / run / wall", _times(seq)),
            ("workers=2: training / run / wall", _times(two)),
            ("RATIO training time", _ratio(seq["train_s"], two["train_s"])),
            ("RATIO rounds 1-10 (no worker start-up)", _ratio(_rounds_s(seq), _rounds_s(two))),
            (
                "fedglobal simulate wall, workers 0 / 2",
                f"{cli0['wall_s']:.1f} s / {cli2['wall_s']:.1f} s",
            ),
            ("RATIO wall incl. start-up", _ratio(cli0["wall_s"], cli2["wall_s"])),
            (
                "final accuracy 0 / 2 (and from the command)",
                f"{seq['accuracy']:.4f} / {two['accuracy']:.4f} "
                f"({cli0['accuracy']:.4f} / {cli2['accuracy']:.4f})",
            ),
        ],
    )


def scale_data(folder: Path, regions: int, rows: int = 200, features: int = 20) -> Path:
    """The scale table's Parquet file (also ondisk_store.py's): ``regions`` regions of
    ``rows`` rows, ``features`` float32 features, an integer class of 10."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(regions)
    n = regions * rows
    x = rng.standard_normal((n, features), dtype=np.float32)
    w = rng.standard_normal((features, 10), dtype=np.float32)
    frame = pd.DataFrame(x, columns=[f"x{j}" for j in range(features)])
    width = len(str(regions - 1))
    frame.insert(0, "region", [f"r{k:0{width}d}" for k in np.repeat(np.arange(regions), rows)])
    frame["y"] = np.argmax(x @ w + rng.normal(size=(n, 10)), axis=1)
    path = folder / f"scale-{regions}.parquet"
    frame.to_parquet(path)
    return path


def scale_experiment(
    name: str, data: Path, fraction: float, storage: str = "disk", rounds: int = 3
) -> dict:
    """The README scale table's experiment on ``data`` (a :func:`scale_data` file):
    MLP 32, SGD, cohort training, ``fraction`` of the regions trained and evaluated."""
    return {
        "experiment": {"name": name, "seed": 0, "rounds": rounds},
        "data": {
            "source": f"parquet:{data}",
            "region": "region",
            "target": "y",
            "task": "classification",
            "test_fraction": 0.2,
            "storage": storage,
        },
        "model": {"name": "mlp", "hidden": [32]},
        "client": {"batch_size": 20, "epochs": 1, "optimizer": "sgd", "cohort": True},
        "strategy": {
            "fraction_train": fraction,
            "fraction_evaluate": fraction,
            "min_train_clients": 2,
            "min_evaluate_clients": 2,
            "min_available_clients": 2,
        },
        "output": {"tensorboard": False, "plots": False},
    }


def _scale_run(folder: Path, regions: int, fraction: float, storage: str = "disk") -> dict:
    path = scale_data(folder, regions)
    name = f"scale{regions}-{round(fraction * 100)}pct-{storage}"
    raw = scale_experiment(name, path, fraction, storage)
    r = _run(raw, folder, name, timeout=3600)
    path.unlink()
    r["per_round_s"] = [row["seconds"] for row in r["rounds"] if row["round"] >= 1]
    r["sampled"] = round(regions * fraction)
    r["framework_mb"] = r["max_rss_mb"] - r["dataset_mb"]
    r["storage"] = storage
    return r


def _scale_row(regions: int, r: dict) -> tuple[str, str]:
    per_round = r["per_round_s"]
    return (
        f"{regions:>6} regions ({r['sampled']} trained/round, {r['storage']})",
        f"peak RSS {r['max_rss_mb']:.0f} MB (dataset {r['dataset_mb']:.0f} MB in memory, "
        f"{r['dataset_disk_mb']:.0f} MB on disk) | "
        f"rounds 1-{len(per_round)}: "
        + ", ".join(f"{s:.2f}" for s in per_round)
        + f" s | start-up+schema {r['rounds'][0]['seconds'] if r['rounds'] else 0:.1f} s"
        + f" | wall {r['wall_s']:.0f} s",
    )


def section_scale(folder: Path, results: dict, sizes: list[int]) -> None:
    """10% of the regions per round at each size, the data on disk (``data.storage =
    "disk"``); then, to separate the total number of regions from the number sampled,
    the largest size again with the sampled count of the one before (e.g. 10,000
    regions at 1% against 1,000 at 10%); then the largest size in memory."""
    out = {regions: _scale_run(folder, regions, 0.1) for regions in sizes}
    rows = [_scale_row(regions, r) for regions, r in out.items()]
    for a, b in itertools.pairwise(sizes):
        # the last round: no XLA compile (round 1 compiles the cohort program)
        ta, tb = out[a]["per_round_s"][-1], out[b]["per_round_s"][-1]
        rows.append((f"RATIO last-round time {b}/{a} (clients x{b // a})", _ratio(tb, ta)))
        rows.append((f"RATIO peak RSS {b}/{a}", _ratio(out[b]["max_rss_mb"], out[a]["max_rss_mb"])))
    if len(sizes) >= 2:
        small, big = sizes[-2], sizes[-1]
        same = _scale_run(folder, big, 0.1 * small / big)
        out[f"{big}-same-sampled"] = same
        rows.append(_scale_row(big, same))
        rows += [
            (
                f"RATIO last-round time {big}/{small} regions, {same['sampled']} sampled both",
                _ratio(same["per_round_s"][-1], out[small]["per_round_s"][-1]),
            ),
            (
                f"RATIO peak RSS {big}/{small} regions, {same['sampled']} sampled both",
                _ratio(same["max_rss_mb"], out[small]["max_rss_mb"]),
            ),
        ]
    big = sizes[-1]
    memory = out[f"{big}-memory"] = _scale_run(folder, big, 0.1, storage="memory")
    rows.append(_scale_row(big, memory))
    rows += [
        (
            f"RATIO peak RSS in memory / on disk, {big} regions",
            _ratio(memory["max_rss_mb"], out[big]["max_rss_mb"]),
        ),
        (
            f"RATIO last-round time on disk / in memory, {big} regions",
            _ratio(out[big]["per_round_s"][-1], memory["per_round_s"][-1]),
        ),
    ]
    results["scale"] = out
    _print("4. scale: regions of 200 rows, 10% trained and evaluated per round", rows)


def section_aggregation(folder: Path, results: dict, clients: int, params: int) -> None:
    r = _child(["aggregation", str(clients), str(params)])
    results["aggregation"] = r
    _print(
        f"5. aggregation: FedAvg of {r['clients']} updates of {r['params'] / 1e6:.1f}M "
        f"parameters ({r['model_mb']} MB each)",
        [
            ("(CPU seconds, best of 3)", ""),
            ("numpy reading the bytes once", f"{r['read_once_s']:.3f} s"),
            ("ours, checked (finite, shapes)", f"{r['ours_checked_s']:.3f} s"),
            ("ours, unchecked", f"{r['ours_unchecked_s']:.3f} s"),
            ("RATIO ours checked / read once", _ratio(r["ours_checked_s"], r["read_once_s"])),
            ("peak extra memory (in-memory input)", f"{r['peak_extra_inmemory_mb']} MB"),
            ("from ArrayRecords: Flower aggregate_arrayrecords", f"{r['flower_records_s']:.3f} s"),
            ("from ArrayRecords: ours, zero-copy views", f"{r['ours_records_s']:.3f} s"),
            ("from ArrayRecords: ours, Array.numpy() copies", f"{r['ours_records_numpy_s']:.3f} s"),
            ("RATIO Flower / ours", _ratio(r["flower_records_s"], r["ours_records_s"])),
            (
                "peak extra memory ours / Flower",
                f"{r['peak_extra_ours_records_mb']} MB / {r['peak_extra_flower_records_mb']} MB",
            ),
        ],
    )


def section_communication(folder: Path, results: dict) -> None:
    base = _merge(
        WORKLOAD,
        model={"name": "mlp", "hidden": [64]},
        client={"cohort": True, "epochs": 5},
    )
    runs: dict[str, dict] = {}
    variants = {
        "fedavg": {},
        "fedprox": {"strategy": {"name": "fedprox", "proximal_mu": 0.01}},
        "fedadam": {"strategy": {"name": "fedadam"}},
        "layerwise (output local)": {
            "strategy": {"name": "layerwise", "layers": [{"match": "output/*", "rule": "local"}]}
        },
        "fedavg + float16": {"client": {"compression": "float16"}},
        "fedavg + int8 (EF)": {"client": {"compression": "int8"}},
        "fedavg + top-1% (EF)": {"client": {"compression": "topk", "topk_fraction": 0.01}},
        "fedavg + top-10% (EF)": {"client": {"compression": "topk", "topk_fraction": 0.1}},
    }
    labels = list(variants)
    done = _runs([_merge(base, **variants[label]) for label in labels], folder, "comm")
    runs.update(zip(labels, done, strict=True))
    results["communication"] = runs
    ref = runs["fedavg"]

    def per_round(r: dict, key: str) -> float:
        rows = [row for row in r.get("rounds", []) if row["round"] >= 1]
        return sum(row[key] for row in rows) / max(1, len(rows))

    rows = []
    for label, r in runs.items():
        up = per_round(r, "array_bytes_received")
        down = per_round(r, "array_bytes_sent")
        rows.append(
            (
                label,
                f"up {up / 1e3:8.1f} kB/round (x{per_round(ref, 'array_bytes_received') / up:.1f}"
                f" smaller) | down {down / 1e3:7.1f} kB/round | final accuracy "
                f"{r['accuracy']:.4f} ({r['accuracy'] - ref['accuracy']:+.4f})",
            )
        )
    _print("6. communication: array bytes per round (mlp [64], 10 rounds, 10 of 30 devices)", rows)


# -- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    from fedglobal.runtime.fast_exit import exit_now

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "run":
        p = argparse.ArgumentParser()
        p.add_argument("cmd")
        p.add_argument("configs", nargs="+")
        p.add_argument("--output-dir", required=True)
        p.add_argument("--engine", default="inprocess")
        a = p.parse_args(argv)
        child_run(a.configs, a.output_dir, a.engine)
        exit_now(0)  # as the console script ends (fedglobal.runtime.fast_exit)
    if argv and argv[0] == "hardware":
        child_hardware(argv[1], argv[3])
        exit_now(0)
    if argv and argv[0] == "aggregation":
        child_aggregation(int(argv[1]), int(argv[2]))
        exit_now(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="sections, comma-separated")
    parser.add_argument("--skip", default="", help="sections or 'ray' to skip")
    parser.add_argument("--scale", default="100,1000,10000", help="region counts")
    parser.add_argument("--agg-clients", type=int, default=100)
    parser.add_argument("--agg-params", type=int, default=10_000_000)
    parser.add_argument("--json", default=None, help="write all numbers to this file")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    skip = [s for s in args.skip.split(",") if s]
    unknown = [s for s in only + skip if s not in (*SECTIONS, "ray")]
    if unknown:
        parser.error(f"unknown section(s) {unknown}; known: {', '.join(SECTIONS)}, ray")
    started = time.perf_counter()
    print(f"fedglobal speed benchmark | {_load()}")
    results: dict[str, Any] = {"load_start": _load()}
    with tempfile.TemporaryDirectory(prefix="fedglobal-speed-") as tmp:
        folder = Path(tmp)
        for section in SECTIONS:
            if section not in only or section in skip:
                continue
            t0 = time.perf_counter()
            if section == "defaults":
                section_defaults(folder, results)
            elif section == "hardware":
                section_hardware(folder, results)
            elif section == "engines":
                section_engines(folder, results, skip_ray="ray" in skip)
            elif section == "cohort":
                section_cohort(folder, results)
            elif section == "workers":
                section_workers(folder, results)
            elif section == "scale":
                section_scale(folder, results, [int(s) for s in args.scale.split(",")])
            elif section == "aggregation":
                section_aggregation(folder, results, args.agg_clients, args.agg_params)
            elif section == "communication":
                section_communication(folder, results)
            results.setdefault("section_s", {})[section] = round(time.perf_counter() - t0, 1)
    total = time.perf_counter() - started
    results["total_s"] = round(total, 1)
    results["load_end"] = _load()
    print(f"\nbenchmark total {total:.0f} s | {_load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
