"""Benchmarks: compare aggregation strategies on a grid of data settings and seeds.

``fedglobal benchmark experiments/benchmarks/<suite>.toml`` (or
:func:`run_benchmark`) runs every (dataset, condition, strategy, seed) cell of a
suite file in this process and writes ``runs/bench-<name>/``: ``results.csv``
(one row per run and round), ``summary.md`` and ``summary.csv`` (mean ± std
over seeds) and ``plots/``. See :mod:`fedglobal.benchmark.suite` for the file
format and :mod:`fedglobal.benchmark.runner` for how fairness, reuse,
failures and bytes are handled.
"""

from __future__ import annotations

from fedglobal.benchmark.runner import BenchmarkResult, CellResult, run_benchmark, select_cells
from fedglobal.benchmark.suite import Cell, Suite, SuiteError, load_suite, parse_suite

__all__ = [
    "BenchmarkResult",
    "Cell",
    "CellResult",
    "Suite",
    "SuiteError",
    "load_suite",
    "parse_suite",
    "run_benchmark",
    "select_cells",
]
