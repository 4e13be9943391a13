"""Progress of a benchmark grid: a rich progress bar on a terminal, plain lines otherwise.

On a terminal (stderr is a TTY) a bar shows cells done, the running cell, the
elapsed time and an estimate of the time left, and every finished cell leaves a
line above it. Elsewhere (CI, a log file) each finished cell prints one plain
line. ``quiet`` prints nothing.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["BenchProgress"]


class BenchProgress:
    """Context manager: ``start(cell)`` / ``finish(result)`` for every cell."""

    def __init__(self, total: int, name: str, *, quiet: bool = False) -> None:
        self.total = total
        self.name = name
        self.quiet = quiet
        self.console = Console(file=sys.stderr, highlight=False, soft_wrap=True)
        self.interactive = self.console.is_terminal and not quiet
        self._progress: Progress | None = None
        self._task: Any = None
        self._done = 0
        self._failed = 0
        self._started = time.perf_counter()

    def __enter__(self) -> BenchProgress:
        self._started = time.perf_counter()
        if self.quiet:
            return self
        if self.interactive:
            self._progress = Progress(
                TextColumn("[bold]{task.fields[name]}[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.total, name=self.name)
        else:
            self.console.print(f"benchmark {self.name}: {self.total} runs")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)  # type: ignore[arg-type]
            self._progress = None
        if not self.quiet:
            took = time.perf_counter() - self._started
            failed = f", {self._failed} failed" if self._failed else ""
            self.console.print(
                f"benchmark {self.name}: {self._done}/{self.total} runs done{failed} in {took:.0f}s"
            )

    def start(self, cell: Any) -> None:
        """A cell is starting."""
        if self._progress is not None:
            self._progress.update(self._task, description=escape(cell.key))

    def finish(self, result: Any) -> None:
        """A cell finished (``result`` is a CellResult)."""
        self._done += 1
        if not result.ok:
            self._failed += 1
        if self.quiet:
            return
        width = len(str(self.total))
        head = f"[{self._done:>{width}}/{self.total}] {result.cell.key}"
        if result.ok:
            rows = result.rows
            value = float(rows["value"].iloc[-1])
            line = f"{head}: {result.metric} {value:.4g} ({result.wall_time_s:.1f}s)"
        else:
            line = f"{head}: FAILED {result.error}"
        if self._progress is not None:
            style = "" if result.ok else "red"
            self._progress.console.print(escape(line), style=style)
            self._progress.advance(self._task)
        else:
            self.console.print(line, markup=False)
