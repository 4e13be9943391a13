"""``fedglobal benchmark``: run a strategy-comparison suite.

fedglobal benchmark experiments/benchmarks/fedprox_synthetic.toml
fedglobal benchmark experiments/benchmarks/geo_tabular.toml --seeds 0,1 --only strategy=fed*
fedglobal benchmark experiments/benchmarks/robustness.toml --full --quiet

Registered from :mod:`fedglobal.cli.main` (``add_parser`` and ``run``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fedglobal.cli.options import add_overrides

__all__ = ["COMMAND", "add_parser", "run"]

COMMAND = "benchmark"


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds {text!r}: give integers separated by commas, e.g. --seeds 0,1,2"
        ) from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give integers >= 0, e.g. 0,1,2")
    return seeds


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``benchmark`` subcommand to the CLI's subparsers."""
    p = sub.add_parser(
        COMMAND,
        help="compare strategies on a grid of data settings and seeds",
        description=(
            "Run every (dataset, condition, strategy, seed) cell of a benchmark suite and "
            "write runs/bench-<name>/: results.csv, summary.md, summary.csv and plots/."
        ),
    )
    p.add_argument("suite", help="suite TOML file, e.g. experiments/benchmarks/geo_tabular.toml")
    p.add_argument("--full", action="store_true", help="the suite's [full] scale (larger machines)")
    p.add_argument("--seeds", type=_seeds, default=None, help="replace the seeds, e.g. 0,1,2")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="[KEY=]GLOB",
        help="run only matching cells; KEY is dataset, condition or strategy (repeatable)",
    )
    add_overrides(p, "override one key of every cell's experiment (repeatable)")
    p.add_argument("--output-dir", default="runs", help="bench-<name>/ goes here (default runs)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker processes (default 1: every run in this process); each (dataset, seed) "
        "group of runs stays in one worker so it reuses the loaded data and compiled model",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the plots")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the ``benchmark`` subcommand; 0 if every cell ran, 1 if some failed."""
    from fedglobal.benchmark import load_suite, run_benchmark, select_cells

    suite = load_suite(args.suite, full=args.full, seeds=args.seeds)
    if args.list:
        for cell in select_cells(suite.cells(), args.only):
            print(cell.key)
        return 0
    result = run_benchmark(
        suite,
        only=args.only,
        overrides=args.overrides,
        output_dir=args.output_dir,
        quiet=args.quiet,
        plots=not args.no_plots,
        jobs=args.jobs,
    )
    print(f"benchmark folder: {result.out_dir}")
    print(f"summary: {result.out_dir / 'summary.md'}")
    if result.failed:
        print(
            f"{len(result.failed)} of {len(result.cells)} runs failed (see summary.md)",
            file=sys.stderr,
        )
        return 1
    return 0
