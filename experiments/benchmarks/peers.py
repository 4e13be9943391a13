"""fedglobal against its peers, side by side in one run: Apple's pfl-research and Flower.

    .venv/bin/python experiments/benchmarks/peers.py                  # W1, CNN, Flower; 3 repeats
    .venv/bin/python experiments/benchmarks/peers.py --only w1 --repeats 1
    .venv/bin/python experiments/benchmarks/peers.py --only cnn,flower --out runs/peers.json

Every system runs as its users run it, as a fresh process timed from launch to
exit, with the peak resident memory of its whole process tree (the sum of the
RSS of every process it started, sampled every 0.2 s; shared pages count once
per process). The table shows the median of ``--repeats`` runs, interleaved
(one run of each system, then the next round of runs), and the ratios
peer / fedglobal (above 1: fedglobal is faster or smaller).

Workloads, identical for every system: the same per-region rows (exported from
fedglobal's own data layer: its regions, train/test splits and encoding,
standardised with its federated mean and variance), the same initial weights
(fedglobal's ServerApp's, seeded by the experiment seed) and, for pfl, the same
regions trained in each round (fedglobal's strategy's sampling). So the final
accuracies must agree (up to the order of the local shuffles).

- ``w1``: FedProx Synthetic(0.5, 0.5) (Li et al. 2020), 30 regions, multinomial
  logistic regression, 10 rounds, 10 regions per round, E = 20 local epochs,
  batch 10, SGD lr 0.01; fedglobal against pfl-research.
- ``cnn``: the fashion_mnist_dirichlet suite's CNN (filters 8 and 16, hidden 32)
  without batch normalisation on the first 10,000 Fashion-MNIST training images,
  20 Dirichlet(0.5) clients, 10 rounds, 10 per round, 1 epoch, batch 32,
  Adam lr 0.002; fedglobal against pfl-research.
- ``flower``: W1 with Flower's usual TensorFlow ClientApp (builds and compiles the
  Keras model per message, ``model.fit``) on ``flwr run`` with the Simulation
  Engine (Ray), against fedglobal's W1 run.

fedglobal runs ``fedglobal simulate`` on a TOML that sets only the workload's keys
(default settings otherwise); ``--set KEY=VALUE`` adds one more fedglobal row per
workload with that override. Its XLA compile cache starts empty for every run
(``--compile-cache warm``: a shared cache, filled by one untimed run first).

pfl-research runs in a virtual environment of its own, created on first use in
``.peers/pfl-venv`` (ignored by git): ``pfl[tf]==0.6.0``, ``tensorflow==2.21.0``,
``tf-keras==2.21.0``, ``tensorflow-probability[tf]==0.25.0``, about 2.5 GB. Its
script is ``peers_pfl.py``; Flower's app is ``peers_flower_app.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PEERS_DIR = ROOT / ".peers"
PFL_VENV = PEERS_DIR / "pfl-venv"
PFL_REQUIREMENTS = (
    "pfl[tf]==0.6.0",
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "tensorflow-probability[tf]==0.25.0",
)
#: what ``import`` reports for each pinned package
PFL_VERSIONS = {"pfl": "0.6.0", "tensorflow": "2.21.0", "tf_keras": "2.21.0"}
PFL_SCRIPT = HERE / "peers_pfl.py"
FLOWER_APP = HERE / "peers_flower_app.py"
ONLY = ("w1", "cnn", "flower")
SAMPLE_S = 0.2

W1 = {
    "experiment": {"name": "peers-w1", "seed": 0, "rounds": 10},
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
    "strategy": {"name": "fedavg", "fraction_train": 0.3333, "min_train_clients": 10},
}

CNN = {
    "experiment": {"name": "peers-cnn", "seed": 0, "rounds": 10},
    "data": {
        "source": "fashion-mnist:train:10000",
        "target": "label",
        "task": "classification",
        "partition": "dirichlet",
        "alpha": 0.5,
        "num_regions": 20,
        "test_fraction": 0.2,
        "min_region_rows": 20,
        "rare_regions": "drop",
    },
    "model": {"name": "cnn", "filters": [8, 16], "hidden": [32], "batch_norm": False},
    "client": {"optimizer": "adam", "learning_rate": 0.002, "batch_size": 32, "epochs": 1},
    "strategy": {"name": "fedavg", "fraction_train": 0.5, "min_train_clients": 2},
}

WORKLOADS = {"w1": W1, "cnn": CNN}


# -- jobs and results ------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One system on one workload; ``sets`` are extra fedglobal ``--set`` overrides."""

    workload: str
    system: str  # fedglobal | pfl | flower
    sets: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        extra = " " + " ".join(f"--set {s}" for s in self.sets) if self.sets else ""
        return f"{self.system}{extra}"


@dataclass
class Measurement:
    """One timed run: launch to exit, peak RSS of the process tree, final accuracy."""

    wall_s: float
    peak_rss_mb: float
    accuracy: float | None
    load: float | None = None  # 1-minute load average at the start
    extra: dict[str, Any] = field(default_factory=dict)


def plan(only: Iterable[str], sets: Sequence[str] = ()) -> list[Job]:
    """The jobs of the selected comparisons, each once, in a fixed order.

    ``w1`` and ``cnn``: fedglobal and pfl on that workload; ``flower``: fedglobal
    and Flower on W1. ``sets`` adds a fedglobal job per workload with those overrides.
    """
    selected = list(only)
    unknown = [s for s in selected if s not in ONLY]
    if unknown or not selected:
        raise ValueError(
            f"--only {','.join(selected)!s}: choose one or more of {', '.join(ONLY)} "
            "(comma-separated)"
        )
    jobs: list[Job] = []

    def add(job: Job) -> None:
        if job not in jobs:
            jobs.append(job)

    for name in ONLY:
        if name not in selected:
            continue
        workload = "w1" if name == "flower" else name
        add(Job(workload, "fedglobal"))
        if sets:
            add(Job(workload, "fedglobal", tuple(sets)))
        add(Job(workload, "flower" if name == "flower" else "pfl"))
    return jobs


def summarise(runs: dict[Job, list[Measurement]]) -> list[dict[str, Any]]:
    """One row per job: medians of its runs and the ratios to fedglobal's default."""
    rows = []
    for job, measured in runs.items():
        if not measured:
            continue
        accuracies = [m.accuracy for m in measured if m.accuracy is not None]
        rows.append(
            {
                "workload": job.workload,
                "system": job.label,
                "runs": len(measured),
                "wall_s": statistics.median(m.wall_s for m in measured),
                "wall_s_all": [round(m.wall_s, 2) for m in measured],
                "peak_rss_mb": statistics.median(m.peak_rss_mb for m in measured),
                "accuracy": statistics.median(accuracies) if accuracies else None,
                "accuracy_all": [m.accuracy for m in measured],
                "load_1min": [m.load for m in measured],
            }
        )
    base = {r["workload"]: r for r in rows if r["system"] == "fedglobal"}
    for row in rows:
        ref = base.get(row["workload"])
        row["wall_ratio"] = ratio(row["wall_s"], ref["wall_s"]) if ref else None
        row["rss_ratio"] = ratio(row["peak_rss_mb"], ref["peak_rss_mb"]) if ref else None
        both = ref is not None and None not in (row["accuracy"], ref["accuracy"])
        row["accuracy_diff"] = row["accuracy"] - ref["accuracy"] if both else None
    return rows


def ratio(value: float, reference: float) -> float | None:
    """``value / reference``, or None when the reference is not positive."""
    return value / reference if reference > 0 else None


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a plain-text table (ratios: this system / fedglobal's default)."""
    head = ("workload", "system", "wall s", "peak RSS MB", "accuracy", "wall x", "RSS x", "runs")
    lines = [head]
    for r in rows:
        lines.append(
            (
                r["workload"],
                r["system"],
                f"{r['wall_s']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                "-" if r["accuracy"] is None else f"{r['accuracy']:.4f}",
                "-" if r["wall_ratio"] is None else f"{r['wall_ratio']:.2f}",
                "-" if r["rss_ratio"] is None else f"{r['rss_ratio']:.2f}",
                str(r["runs"]),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = []
    for n, line in enumerate(lines):
        pairs = enumerate(zip(line, widths, strict=True))
        cells = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        out.append("  ".join(cells))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def json_tail(text: str) -> dict[str, Any]:
    """The last line of ``text`` that is a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise ValueError(f"no JSON line in the output: {text[-500:]!r}")


def fedglobal_accuracy(run_dir: Path) -> float:
    """The last round's pooled test accuracy in a run folder's ``history.csv``."""
    import csv

    with open(run_dir / "history.csv", newline="", encoding="utf-8") as f:
        rows = [
            r
            for r in csv.DictReader(f)
            if r["region"] == "all" and r["split"] == "test" and r["metric"] == "accuracy"
        ]
    if not rows:
        raise ValueError(f"{run_dir / 'history.csv'} has no pooled test accuracy")
    last = max(rows, key=lambda r: int(r["round"]))
    return float(last["value"])


def trained_regions(run_dir: Path) -> dict[int, list[str]]:
    """Regions with a train row per round in a run folder's ``history.csv``."""
    import csv

    out: dict[int, set[str]] = {}
    with open(run_dir / "history.csv", newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["split"] == "train" and r["region"] != "all":
                out.setdefault(int(r["round"]), set()).add(r["region"])
    return {k: sorted(v) for k, v in sorted(out.items())}


def expected_trained(meta: dict[str, Any]) -> dict[int, list[str]]:
    """Round -> the sorted region names an exported workload's cohorts train."""
    regions = meta["regions"]
    return {r + 1: sorted(regions[i] for i in c) for r, c in enumerate(meta["cohorts"])}


# -- the export: one workload's data from fedglobal's data layer -------------------------


def experiment_config(raw: dict[str, Any], folder: Path, name: str) -> Path:
    """Write ``raw`` as an experiment TOML in ``folder``."""
    import tomli_w

    path = folder / f"{name}.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def cohorts(cfg: Any, regions: Sequence[str]) -> list[list[int]]:
    """Indices into ``sorted(regions)`` of the regions fedglobal's strategy trains in
    each round 1..R (its own sampling: seeded by (seed, round), in region order)."""
    import strategies
    from strategies.sampling import TRAIN_STREAM, sample_clients

    strategy = strategies.get(cfg.strategy.name, seed=cfg.experiment.seed, **cfg.strategy.params)
    return [
        sample_clients(
            range(len(regions)),
            fraction=strategy.fraction_train,
            minimum=strategy.min_train_nodes,
            seed=cfg.experiment.seed,
            server_round=rnd,
            stream=TRAIN_STREAM,
        )
        for rnd in range(1, cfg.experiment.rounds + 1)
    ]


def row_order(cfg: Any, server_round: int, region: str, n: int) -> Any:
    """The order in which fedglobal's client visits a region's training rows in a round
    (``clients.regional.RegionalClient.plan``: one permutation seeded by (seed, round,
    region), the same on every local epoch)."""
    import numpy as np

    from clients.regional import shuffle_order
    from fedglobal.data import shuffle_seed

    if not cfg.client.shuffle:
        return np.arange(n, dtype=np.int32)
    seed = shuffle_seed(cfg.experiment.seed, server_round, region)
    return np.asarray(shuffle_order(n, seed), dtype=np.int32)


def export(toml: Path, out: Path) -> dict[str, Any]:
    """Export a workload from fedglobal's data layer to ``out`` (``.npz``); its meta.

    Per region ``i`` of ``sorted(regions)``: ``x_train_i``, ``y_train_i``,
    ``x_test_i``, ``y_test_i`` (features standardised as the model's Normalization
    layer does: ``(x - mean) / max(sqrt(variance), 1e-7)``); ``w_0..`` the initial
    trainable weights in the model's order (without the Normalization layer, which
    has none); ``cohorts`` (rounds x per-round region indices); ``order_r_i`` the
    order fedglobal's client visits region i's training rows in round r
    (:func:`row_order`); ``meta`` (JSON).
    """
    import numpy as np

    from fedglobal import data
    from fedglobal.config import load_config
    from fedglobal.server.app import initial_weights

    cfg = load_config(str(toml))
    regions = sorted(data.list_regions(cfg), key=str)
    stats = [data.region_stats(cfg, r) for r in regions]
    schema = data.merge_stats(stats, cfg)
    mean = np.asarray(schema.mean, dtype=np.float32)
    scale = np.maximum(np.sqrt(np.asarray(schema.variance, dtype=np.float32)), np.float32(1e-7))
    arrays: dict[str, Any] = {}
    for i, region in enumerate(regions):
        a = data.encode_region(cfg, region, schema)
        arrays[f"x_train_{i}"] = ((a.x_train - mean) / scale).astype(np.float32)
        arrays[f"y_train_{i}"] = np.asarray(a.y_train, dtype=np.int32)
        arrays[f"x_test_{i}"] = ((a.x_test - mean) / scale).astype(np.float32)
        arrays[f"y_test_{i}"] = np.asarray(a.y_test, dtype=np.int32)
    model, _ = initial_weights(cfg, schema)
    weights = [np.asarray(v.numpy()) for v in model.trainable_weights]
    for i, w in enumerate(weights):
        arrays[f"w_{i}"] = w
    chosen = cohorts(cfg, regions)
    arrays["cohorts"] = np.asarray(chosen, dtype=np.int32)
    for rnd, cohort in enumerate(chosen, start=1):
        for i in cohort:
            n = len(arrays[f"y_train_{i}"])
            arrays[f"order_{rnd}_{i}"] = row_order(cfg, rnd, regions[i], n)
    meta = {
        "regions": [str(r) for r in regions],
        "model": cfg.model.name,
        "filters": list(cfg.model.filters),
        "hidden": list(cfg.model.hidden),
        "input_dim": schema.input_dim,
        "num_classes": schema.num_classes,
        "num_weights": len(weights),
        "optimizer": cfg.client.optimizer,
        "learning_rate": cfg.client.learning_rate,
        "epochs": cfg.client.epochs,
        "batch_size": cfg.client.batch_size,
        "rounds": cfg.experiment.rounds,
        "per_round": len(chosen[0]) if chosen else 0,
        "cohorts": chosen,
        "seed": cfg.experiment.seed,
        "train_rows": int(sum(len(arrays[f"y_train_{i}"]) for i in range(len(regions)))),
        "test_rows": int(sum(len(arrays[f"y_test_{i}"]) for i in range(len(regions)))),
    }
    arrays["meta"] = np.asarray(json.dumps(meta))
    np.savez(out, **arrays)
    return meta


# -- measuring a process tree -------------------------------------------------------------


#: a process: (pid, start time in clock ticks since boot); a pid alone may be reused
Proc = tuple[int, int]


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(parent pid, state, start time) of ``pid`` from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[1]), fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _processes() -> dict[Proc, int]:
    """Every process on the machine -> its parent pid."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            out[(int(entry), stat[2])] = stat[0]
    return out


def descendants(root: int, processes: dict[Proc, int]) -> set[Proc]:
    """The process ``root`` and every process below it."""
    children: dict[int, list[Proc]] = {}
    for proc, ppid in processes.items():
        children.setdefault(ppid, []).append(proc)
    found: set[Proc] = {p for p in processes if p[0] == root}
    todo = list(found)
    while todo:
        for child in children.get(todo.pop()[0], []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _rss_bytes(proc: Proc) -> int:
    try:
        with open(f"/proc/{proc[0]}/statm", encoding="utf-8") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def _alive(proc: Proc) -> bool:
    """Still running (not a zombie), and still the same process (same start time)."""
    stat = _stat(proc[0])
    return stat is not None and stat[1] != "Z" and stat[2] == proc[1]


def _stop(procs: Iterable[Proc], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, to each process still alive."""
    procs = [p for p in procs if _alive(p)]
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc[0], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(p) for p in procs):
        time.sleep(0.1)
    for proc in procs:
        if _alive(proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc[0], signal.SIGKILL)


def measure(
    argv: Sequence[str], *, env: dict[str, str], timeout: float, log: Path
) -> tuple[float, float, str]:
    """Run ``argv``; (wall seconds launch to exit, peak tree RSS in MB, its stdout).

    Every process the command starts is tracked (also one that outlives its
    parent) and, if still running when the command exits or times out, stopped
    by pid. Raises RuntimeError on a non-zero exit, with the tail of its stderr.
    """
    seen: set[Proc] = set()
    peak = 0
    with open(log, "w", encoding="utf-8") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT
        )
        out_chunks: list[str] = []
        reader = threading.Thread(
            target=lambda: out_chunks.append(proc.stdout.read() if proc.stdout else ""),
            daemon=True,
        )
        reader.start()
        try:
            while proc.poll() is None:
                seen |= descendants(proc.pid, _processes())
                peak = max(peak, sum(_rss_bytes(p) for p in seen if _alive(p)))
                if time.perf_counter() - started > timeout:
                    raise TimeoutError(f"`{' '.join(argv[:3])} ...` ran past {timeout:g} s")
                time.sleep(SAMPLE_S)
            wall = time.perf_counter() - started
        finally:
            _stop(p for p in seen if p[0] != proc.pid)  # what outlived it, by pid
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            reader.join(timeout=10)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"`{' '.join(argv[:3])} ...` exited {proc.returncode}:\n{tail}")
    return wall, peak / 2**20, "".join(out_chunks)


# -- the systems ----------------------------------------------------------------------------


def ensure_pfl_venv(venv: Path = PFL_VENV) -> Path:
    """pfl-research's own virtual environment (created and installed if absent); its python."""
    python = venv / "bin" / "python"
    probe = "import json, pfl, tensorflow, tf_keras, tensorflow_probability; print(json.dumps({m.__name__: m.__version__ for m in (pfl, tensorflow, tf_keras)}))"  # noqa: E501
    if python.exists():
        out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if out.returncode == 0 and json_tail(out.stdout) == PFL_VERSIONS:
            return python
    base = getattr(sys, "_base_executable", sys.executable)
    print(f"[peers] installing pfl-research into {venv} (about 2.5 GB, once) ...", flush=True)
    if not python.exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--progress-bar", "off", *PFL_REQUIREMENTS],
        check=True,
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    if out.returncode != 0 or json_tail(out.stdout) != PFL_VERSIONS:
        raise RuntimeError(f"the pfl venv {venv} does not import the pinned versions: {out}")
    return python


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra}
    return env


def run_fedglobal(job: Job, toml: Path, folder: Path, cache: Path | None) -> Measurement:
    out_dir = Path(tempfile.mkdtemp(prefix="fg-", dir=folder))
    with tempfile.TemporaryDirectory(prefix="xla-", dir=folder) as cold:
        argv = [_fedglobal_cli(), "simulate", str(toml), "--output-dir", str(out_dir)]
        for s in job.sets:
            argv += ["--set", s]
        env = _env(FEDGLOBAL_COMPILE_CACHE=str(cache or cold))
        wall, rss, _ = measure(argv, env=env, timeout=1800, log=out_dir / "stderr.log")
    run_dir = next(p for p in out_dir.iterdir() if p.is_dir())
    extra = {"run_dir": str(run_dir), "trained": trained_regions(run_dir)}
    summary = run_dir / "summary.json"
    if summary.is_file():
        # which path trained the rounds (cohort or one by one) and why
        extra["training"] = json.loads(summary.read_text()).get("training")
    return Measurement(wall, rss, fedglobal_accuracy(run_dir), extra=extra)


def _fedglobal_cli() -> str:
    local = Path(sys.executable).parent / "fedglobal"
    return str(local) if local.exists() else shutil.which("fedglobal") or "fedglobal"


def run_pfl(python: Path, npz: Path, folder: Path) -> Measurement:
    argv = [str(python), str(PFL_SCRIPT), str(npz)]
    env = _env(TF_USE_LEGACY_KERAS="1")
    env.pop("PYTHONPATH", None)  # nothing of fedglobal in pfl's process
    wall, rss, out = measure(argv, env=env, timeout=1800, log=folder / "pfl-stderr.log")
    result = json_tail(out)
    return Measurement(wall, rss, result["accuracy"], extra=result)


def run_flower(npz: Path, folder: Path) -> Measurement:
    argv = [sys.executable, str(Path(__file__).resolve()), "flower-driver", str(npz)]
    wall, rss, out = measure(argv, env=_env(), timeout=1800, log=folder / "flower-stderr.log")
    result = json_tail(out)
    return Measurement(wall, rss, result["accuracy"], extra=result)


def flower_driver(npz: Path) -> dict[str, Any]:
    """In its own process: a private FLWR_HOME, ``flower-superlink --simulation``, then
    ``flwr run`` of peers_flower_app.py with 30 simulated SuperNodes (Flower's default
    client resources); every process stopped by pid (fedglobal.engines' Supervisor)."""
    import numpy as np
    import tomli_w

    from fedglobal.engines.flower import FlowerHome, start_superlink, submit_run
    from fedglobal.engines.processes import Supervisor

    with np.load(npz) as data:
        meta = json.loads(str(data["meta"]))
    with tempfile.TemporaryDirectory(prefix="peers-flower-") as tmp:
        home = FlowerHome(Path(tmp) / "flwr-home")
        shutil.copy(FLOWER_APP, home.app_dir / FLOWER_APP.name)
        result_path = Path(tmp) / "result.json"
        config = {
            "data-path": str(npz),
            "result-path": str(result_path),
            "num-server-rounds": int(meta["rounds"]),
            "local-epochs": int(meta["epochs"]),
            "batch-size": int(meta["batch_size"]),
            "learning-rate": float(meta["learning_rate"]),
        }
        (home.app_dir / "pyproject.toml").write_text(tomli_w.dumps(_flower_pyproject(config)))
        env = {"RAY_TMPDIR": tmp, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1"}
        os.environ.update(env)
        with Supervisor(log_dir=Path(tmp) / "logs") as sup:
            start_superlink(sup, home, simulation=True, env=env)
            outcome = submit_run(
                sup,
                home,
                config,
                timeout=1800,
                federation_config={"num-supernodes": len(meta["regions"])},
                quiet=True,
            )
            if not outcome.ok or not result_path.is_file():
                raise RuntimeError(
                    f"the Flower run failed: {outcome.describe()}\n{''.join(outcome.output[-30:])}"
                )
        return json.loads(result_path.read_text())


def _flower_pyproject(config: dict[str, Any]) -> dict[str, Any]:
    module = FLOWER_APP.stem
    return {
        "build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"},
        "project": {
            "name": "peers-flower",
            "version": "1.0.0",
            "description": "Flower's usual TensorFlow app (peers benchmark, W1)",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedglobal",
                    "components": {
                        "serverapp": f"{module}:server",
                        "clientapp": f"{module}:client",
                    },
                    "config": config,
                }
            }
        },
    }


# -- main -------------------------------------------------------------------------------------


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _progress(text: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["flower-driver"]:
        print(json.dumps(flower_driver(Path(argv[1]))), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(ONLY), help="w1, cnn, flower (comma-separated)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per system")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run fedglobal with this override (repeatable; one more row per workload)",
    )
    parser.add_argument("--compile-cache", choices=("cold", "warm"), default="cold")
    parser.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give 1 or more")
    try:
        jobs = plan([s.strip() for s in args.only.split(",") if s.strip()], args.sets)
    except ValueError as exc:
        parser.error(str(exc))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # the export imports TensorFlow
    started = time.perf_counter()
    _progress(f"jobs: {', '.join(f'{j.workload}/{j.label}' for j in jobs)}; load {_load()}")
    python = ensure_pfl_venv() if any(j.system == "pfl" for j in jobs) else None
    runs: dict[Job, list[Measurement]] = {j: [] for j in jobs}
    exported: dict[str, Any] = {}
    failures: list[dict[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="fedglobal-peers-") as tmp:
        folder = Path(tmp)
        files = {}
        for name in dict.fromkeys(j.workload for j in jobs):
            toml = experiment_config(WORKLOADS[name], folder, name)
            npz = folder / f"{name}.npz"
            _progress(f"exporting {name} from fedglobal's data layer")
            exported[name] = export(toml, npz)
            files[name] = (toml, npz)
        cache = folder / "xla-shared" if args.compile_cache == "warm" else None
        if cache is not None:
            for job in jobs:
                if job.system == "fedglobal":
                    _progress(f"warming the compile cache: {job.workload}/{job.label}")
                    run_fedglobal(job, files[job.workload][0], folder, cache)
        for rep in range(1, args.repeats + 1):
            for job in jobs:
                toml, npz = files[job.workload]
                load = _load()
                _progress(f"run {rep}/{args.repeats} {job.workload} {job.label} ...")
                try:
                    if job.system == "fedglobal":
                        m = run_fedglobal(job, toml, folder, cache)
                        want = expected_trained(exported[job.workload])
                        m.extra["cohorts_match"] = m.extra.pop("trained") == want
                    elif job.system == "pfl":
                        m = run_pfl(python, npz, folder)
                    else:
                        m = run_flower(npz, folder)
                except (RuntimeError, TimeoutError, ValueError, OSError) as exc:
                    failures.append({"job": f"{job.workload}/{job.label}", "error": str(exc)})
                    _progress(f"run {rep} {job.workload} {job.label} FAILED: {str(exc)[-2000:]}")
                    continue
                m.load = load
                runs[job].append(m)
                acc = "-" if m.accuracy is None else f"{m.accuracy:.4f}"
                _progress(
                    f"run {rep}/{args.repeats} {job.workload} {job.label}: {m.wall_s:.1f} s, "
                    f"{m.peak_rss_mb:.0f} MB, accuracy {acc} (load {load})"
                )
    rows = summarise(runs)
    print()
    print(table(rows))
    print(
        f"\nmedian of {args.repeats} interleaved run(s); wall x, RSS x = system / fedglobal "
        f"default on the same workload; load {_load()} at the end; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    if args.out:
        results = {
            "rows": rows,
            "runs": {f"{j.workload}/{j.label}": [asdict(m) for m in ms] for j, ms in runs.items()},
            "workloads": exported,
            "failures": failures,
            "repeats": args.repeats,
            "compile_cache": args.compile_cache,
            "cpus": os.cpu_count(),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
