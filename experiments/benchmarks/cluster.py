"""The cluster engine against the Ray engine, on a two-node Ray cluster (issue 18).

    .venv/bin/python experiments/benchmarks/cluster.py                # quickstart, 20 rounds
    .venv/bin/python experiments/benchmarks/cluster.py --rounds 5 --json runs/cluster.json

Starts a two-node Ray cluster on this machine's loopback through Ray's own API
(``ray.cluster_utils.Cluster``: head and worker node, 127.0.0.1, ``--cpus`` CPUs
each), then times ``fedglobal simulate experiments/quickstart.toml`` as a user
runs it, from launch to exit (start-up included), side by side in one run:

- ``--engine ray`` attached to the cluster (Flower's Simulation Engine);
- ``--engine cluster`` attached to the cluster (the in-process Grid, Ray actors);
- on one machine: ``--engine cluster`` on its own local Ray, and
  ``--engine inprocess`` with ``experiment.workers = 2``.

Prints wall seconds, the final pooled R² and where the regions trained (Ray nodes,
from summary.json's ``placement``), and the ratios. Then, on one machine, the same
pair at ``--long-rounds`` rounds (what the rounds cost once start-up is paid), and
what a local Ray's own start and stop take alone (``ray.init`` + ``ray.shutdown``
in a fresh process: the part of the one-machine gap that is Ray's). The cluster
is stopped by its handle at the end, also on error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments" / "quickstart.toml"


def simulate(engine: str, out: Path, rounds: int, sets: list[str]) -> dict:
    argv = [
        sys.executable,
        "-m",
        "fedglobal.cli",
        "simulate",
        str(QUICKSTART),
        "--engine",
        engine,
        "--output-dir",
        str(out),
        "--quiet",
        "--set",
        f"experiment.rounds={rounds}",
    ]
    for item in sets:
        argv += ["--set", item]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    nodes = sorted({p.get("ray_node_id", p["node"])[:8] for p in summary["placement"].values()})
    r2 = summary["final"].get("test/all", {}).get("r2")
    return {"seconds": round(seconds, 1), "r2": r2, "nodes": nodes}


RAY_ALONE = """
import time
import ray
started = time.perf_counter()
ray.init(address="local", num_cpus={cpus}, include_dashboard=False, log_to_driver=False)
ray.shutdown()
print(time.perf_counter() - started)
"""


def ray_start_stop(cpus: int) -> float:
    """Seconds a local Ray takes to start and stop, nothing run on it (a fresh process)."""
    proc = subprocess.run(
        [sys.executable, "-c", RAY_ALONE.format(cpus=cpus)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return round(float(proc.stdout.split()[-1]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cpus", type=int, default=1, help="CPUs of each cluster node")
    parser.add_argument(
        "--long-rounds",
        type=int,
        default=100,
        help="rounds of the second one-machine pair (0: skip it)",
    )
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fedglobal-cluster-bench-") as tmp:
        cluster = Cluster(
            initialize_head=True,
            connect=False,
            shutdown_at_exit=False,
            head_node_args={
                "node_ip_address": "127.0.0.1",
                "num_cpus": args.cpus,
                "include_dashboard": False,
            },
        )
        try:
            cluster.add_node(node_ip_address="127.0.0.1", num_cpus=args.cpus)
            cluster.wait_for_nodes(timeout=60)
            attach = [f"engine.ray_address={cluster.address}"]
            for name, engine, sets in (
                ("ray, two-node cluster", "ray", attach),
                ("cluster, two-node cluster", "cluster", attach),
            ):
                results[name] = simulate(
                    engine, Path(tmp) / name.replace(" ", "_"), args.rounds, sets
                )
                print(f"{name:34s} {results[name]}", flush=True)
        finally:
            cluster.shutdown()
        one_machine = [(args.rounds, "")]
        if args.long_rounds:
            one_machine.append((args.long_rounds, f", {args.long_rounds} rounds"))
        for rounds, label in one_machine:
            for name, engine, sets in (
                (f"cluster, local Ray{label}", "cluster", []),
                (f"inprocess, workers = 2{label}", "inprocess", ["experiment.workers=2"]),
            ):
                out = Path(tmp) / name.replace(" ", "_").replace(",", "")
                results[name] = simulate(engine, out, rounds, sets)
                print(f"{name:34s} {results[name]}", flush=True)
    ray_alone = ray_start_stop(os.cpu_count() or 1)
    results["local Ray start + stop alone"] = {"seconds": ray_alone}
    print(f"{'local Ray start + stop alone':34s} {ray_alone} s", flush=True)
    ray_s = results["ray, two-node cluster"]["seconds"]
    cluster_s = results["cluster, two-node cluster"]["seconds"]
    local_s = results["cluster, local Ray"]["seconds"]
    pool_s = results["inprocess, workers = 2"]["seconds"]
    print(f"two-node cluster: ray / cluster wall time = {ray_s / cluster_s:.1f}x")
    print(f"one machine: cluster (local Ray) / inprocess workers=2 = {local_s / pool_s:.2f}x")
    print(f"one machine, less Ray's own start + stop: {(local_s - ray_alone) / pool_s:.2f}x")
    if args.long_rounds:
        label = f", {args.long_rounds} rounds"
        long_local = results[f"cluster, local Ray{label}"]["seconds"]
        long_pool = results[f"inprocess, workers = 2{label}"]["seconds"]
        print(
            f"one machine, {args.long_rounds} rounds: cluster / inprocess workers=2 = "
            f"{long_local / long_pool:.2f}x; the {args.long_rounds - args.rounds} rounds more "
            f"took {long_local - local_s:.1f} s against {long_pool - pool_s:.1f} s"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
