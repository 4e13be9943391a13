"""Start-up and per-round wall time of each engine, side by side, with ratios to ``inprocess``.

    .venv/bin/python experiments/benchmarks/engines.py                       # the quickstart
    .venv/bin/python experiments/benchmarks/engines.py --rounds 5 --per-message
    .venv/bin/python experiments/benchmarks/engines.py other.toml --set client.epochs=2

Every engine runs the same experiment (same data, model, strategy, seed).

- **per round**: the median wall time of rounds 1..R (train + evaluate), from
  the ServerApp's own clock (``summary.json`` ``round_end_s``);
- **start-up**: the whole call's wall time (from this process: starting the
  SuperLink, SuperNodes, Ray, the ServerApp...) minus the R rounds; it holds
  process start-up, round 0 (the federated statistics query and the initial
  evaluation) and shutdown;
- **ClientApp s/message** (deployment only): the SuperNodes' own measure of the
  time each message spent in a ClientApp (Flower's ``clientapp-seconds`` of
  the run divided by the number of messages).

``--per-message`` adds the deployment engine with Flower's default ClientApp
mode (a fresh ``flwr-clientapp`` process per message) next to fedglobal's
default (one persistent ClientApp process per SuperNode).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[2]


def _timings(result, total: float, rounds: int) -> dict:
    ends = [float(x) for x in result.summary.get("round_end_s", [])]
    per_round = [b - a for a, b in itertools.pairwise(ends)][-rounds:]
    if len(per_round) != rounds:
        raise SystemExit(f"{result.run_dir}: expected {rounds} round times, got {per_round}")
    return {
        "startup_s": total - sum(per_round),
        "round_s": statistics.median(per_round),
        "total_s": total,
        "final_r2": result.final("r2") if result.config.data.task == "regression" else None,
        "failed": len(result.summary.get("failed_replies", [])),
    }


def run_simulate(cfg, engine: str, out: Path, quiet: bool) -> dict:
    import fedglobal

    t0 = time.perf_counter()
    result = fedglobal.simulate(cfg, engine=engine, output_dir=out, quiet=quiet)
    return _timings(result, time.perf_counter() - t0, cfg.experiment.rounds)


def run_deployment(cfg, clientapp: str, out: Path, quiet: bool) -> dict:
    from fedglobal import data
    from fedglobal.engines.deployment import LoopbackDeployment
    from fedglobal.engines.flower import CONNECTION, flwr
    from fedglobal.run.folder import new_run_dir
    from fedglobal.run.results import load_run

    t0 = time.perf_counter()
    cfg = cfg.replace({"experiment.engine": "deployment", "engine.clientapp": clientapp})
    regions = data.list_regions(cfg)
    run_dir = new_run_dir(cfg, out)
    with LoopbackDeployment(cfg, regions) as deployment:
        outcome = deployment.run(run_dir, quiet=quiet)
        if not outcome.ok:
            raise SystemExit(outcome.describe())
        _, text = flwr(
            deployment.supervisor,
            deployment.home,
            *("ls", CONNECTION, "--run-id", str(outcome.run_id), "--format", "json"),
        )
    total = time.perf_counter() - t0
    timings = _timings(load_run(run_dir), total, cfg.experiment.rounds)
    run = json.loads(text[text.find("{") :])["runs"][0]
    messages = len(regions) * (2 + 2 * cfg.experiment.rounds)  # query, round 0, train+eval
    timings["clientapp_s_per_message"] = run["compute-time"]["clientapp-seconds"] / messages
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", nargs="?", default=str(ROOT / "experiments/quickstart.toml"))
    parser.add_argument("--rounds", type=int, default=3, help="rounds per engine (default 3)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--engines", default="inprocess,ray,deployment", help="comma-separated engine list"
    )
    parser.add_argument(
        "--per-message",
        action="store_true",
        help="also run deployment with Flower's fresh ClientApp process per message",
    )
    parser.add_argument("--verbose", action="store_true", help="show each run's progress")
    args = parser.parse_args(argv)

    from fedglobal.config import load_config

    cfg = load_config(args.experiment, [*args.overrides, f"experiment.rounds={args.rounds}"])
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.per_message:
        engines.append("deployment-per-message")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fedglobal-bench-engines-") as tmp:
        for engine in engines:
            print(f"running {engine} ...", file=sys.stderr, flush=True)
            out = Path(tmp) / engine
            quiet = not args.verbose
            if engine == "deployment":
                rows[engine] = run_deployment(cfg, "persistent", out, quiet)
            elif engine == "deployment-per-message":
                rows[engine] = run_deployment(cfg, "per-message", out, quiet)
            else:
                rows[engine] = run_simulate(cfg, engine, out, quiet)

    base = rows.get("inprocess")
    print(
        f"\n{Path(args.experiment).name}: {args.rounds} rounds, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    header = (
        "| engine | start-up (s) | per round (s) | start-up / inprocess "
        "| per round / inprocess | ClientApp s/message | final R² | failed replies |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for engine, r in rows.items():
        ratio_start = f"{r['startup_s'] / base['startup_s']:.1f}x" if base else "-"
        ratio_round = f"{r['round_s'] / base['round_s']:.1f}x" if base else "-"
        per_message = r.get("clientapp_s_per_message")
        r2 = r.get("final_r2")
        print(
            f"| {engine} | {r['startup_s']:.1f} | {r['round_s']:.2f} | {ratio_start} "
            f"| {ratio_round} | {'-' if per_message is None else f'{per_message:.2f}'} "
            f"| {'-' if r2 is None else f'{r2:.4f}'} | {r['failed']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
