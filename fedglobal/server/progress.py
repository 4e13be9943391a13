"""Progress displays: a live ``rich`` bar on a terminal, plain lines in logs, nothing when quiet.

- :class:`TaskProgress` is the generic display for any long loop (the rounds
  of a run, the cells of a benchmark grid): a bar with the step count,
  elapsed time, ETA and a status text when stderr is a terminal; only the
  lines you :meth:`~TaskProgress.print` otherwise.
- :class:`RoundProgress` feeds it from a run's history callbacks: one line per
  round (train loss, pooled test metrics, server metrics, regions, time) and a
  live bar showing the round, the regions sampled for training and the key
  metrics.

Reuse in your own loop::

    with TaskProgress(len(cells), description="benchmark", unit="run") as progress:
        for i, cell in enumerate(cells, 1):
            result = run(cell)
            progress.update(i, status=f"{cell.name}: r2 {result:.3f}")
            progress.print(f"run {i}/{len(cells)} {cell.name} r2 {result:.3f}")
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

__all__ = ["KEY_METRICS", "RoundProgress", "TaskProgress", "regions_text", "sim_duration"]

KEY_METRICS = {"regression": ("loss", "mae", "r2"), "classification": ("loss", "accuracy", "f1")}


def _console() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


class TaskProgress:
    """A progress display for ``total`` steps.

    Args:
        total: number of steps.
        description: label shown before the bar.
        unit: what a step is (shown after the count, e.g. ``"round"``).
        quiet: show and print nothing.
        console: where to draw (default: stderr).
        live: force the live bar on or off; default: on when the console is
            an interactive terminal.
    """

    def __init__(
        self,
        total: int,
        *,
        description: str = "",
        unit: str = "step",
        quiet: bool = False,
        console: Console | None = None,
        live: bool | None = None,
    ) -> None:
        self.total = max(0, int(total))
        self.description = description
        self.unit = unit
        self.quiet = quiet
        self.console = console or _console()
        is_tty = self.console.is_terminal and not self.console.is_dumb_terminal
        self.live = (is_tty if live is None else live) and not quiet
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> TaskProgress:
        """Start the live bar (no-op when not live or already started)."""
        if self.live and self._progress is None:
            fixed = Column(no_wrap=True)  # keep these whole; the status text gives way
            self._progress = Progress(
                TextColumn("[bold]{task.description}", table_column=fixed),
                BarColumn(bar_width=20),
                MofNCompleteColumn(table_column=Column(no_wrap=True)),
                TextColumn(self.unit + "s", table_column=Column(no_wrap=True)),
                TimeElapsedColumn(table_column=Column(no_wrap=True)),
                TextColumn("ETA", table_column=Column(no_wrap=True)),
                TimeRemainingColumn(table_column=Column(no_wrap=True)),
                TextColumn(
                    "{task.fields[status]}",
                    table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis", min_width=8),
                ),
                expand=True,
                console=self.console,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, status="")
        return self

    def close(self) -> None:
        """Stop the live bar (safe to call more than once, and on error paths)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    def __enter__(self) -> TaskProgress:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- updates ------------------------------------------------------------
    def update(self, completed: int, *, status: str = "", description: str | None = None) -> None:
        """Move the bar to ``completed`` steps and show ``status`` (live only)."""
        if not self.live:
            return
        self.start()
        assert self._progress is not None and self._task is not None
        fields: dict = {"completed": completed, "status": status}
        if description is not None:
            fields["description"] = description
        self._progress.update(self._task, **fields)

    def print(self, line: str) -> None:
        """Print a line (above the bar when live); nothing when quiet."""
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(line, markup=False)
        else:
            self.console.print(line, markup=False)


def regions_text(regions: Sequence[str], *, limit: int = 3) -> str:
    """``"22 regions (Africa, Asia, Europe, +19)"``: a count and the first few names."""
    names = sorted(regions)
    if not names:
        return "no regions"
    shown = ", ".join(names[:limit]) + (f", +{len(names) - limit}" if len(names) > limit else "")
    return f"{len(names)} region{'s' if len(names) != 1 else ''} ({shown})"


def sim_duration(seconds: float) -> str:
    """Simulated time for a progress line: ``"12.3 s"``, ``"45.2 min"`` or ``"3.21 h"``."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _fmt(values: Mapping[str, float], keys: Sequence[str]) -> str:
    return " ".join(f"{m} {values[m]:.4g}" for m in keys if m in values)


class RoundProgress:
    """The progress of a run's rounds, fed by :class:`~fedglobal.server.history.HistoryRecorder`.

    Called as ``progress(server_round, split, pooled, regions)`` for each
    split of each round. It prints one line per round when the round's last
    split arrives (``test``, or ``server`` when :attr:`expect_server` is set)
    and moves the live bar. The live bar starts with round 1; call
    :meth:`close` when the run ends, on every path.
    """

    def __init__(
        self,
        total_rounds: int,
        task: str,
        *,
        quiet: bool = False,
        console: Console | None = None,
        live: bool | None = None,
    ) -> None:
        self.total = total_rounds
        self.task = task
        self.quiet = quiet
        self.expect_server = False
        #: ``[geo]``: round -> simulated seconds at its end, shown on each line.
        self.sim_time: Callable[[int], float | None] | None = None
        self.display = TaskProgress(
            total_rounds,
            description="rounds",
            unit="round",
            quiet=quiet,
            console=console,
            live=live,
        )
        self._start = time.perf_counter()
        self._last = self._start
        self._train: dict[str, float] = {}
        self._trained: list[str] = []
        self._test: dict[str, float] = {}
        self._evaluated: list[str] = []

    @property
    def console(self) -> Console:
        return self.display.console

    def __call__(
        self, server_round: int, split: str, pooled: Mapping[str, float], regions: Sequence[str]
    ) -> None:
        if split == "train":
            self._train, self._trained = dict(pooled), list(regions)
        elif split == "test":
            self._test, self._evaluated = dict(pooled), list(regions)
            if not self.expect_server:
                self._emit(server_round, {})
        elif split == "server":
            self._emit(server_round, dict(pooled))

    def _emit(self, server_round: int, server: Mapping[str, float]) -> None:
        now = time.perf_counter()
        keys = KEY_METRICS.get(self.task, ("loss",))
        parts = [f"round {server_round:>{len(str(self.total))}}/{self.total}"]
        trained = self._trained if server_round > 0 else []
        if server_round > 0 and "loss" in self._train:
            parts.append(f"train loss {self._train['loss']:.4g}")
        parts.append(f"test(all) {_fmt(self._test, keys)}")
        if server:
            parts.append(f"server {_fmt(server, keys)}")
        if trained and len(trained) != len(self._evaluated):
            parts.append(f"{len(trained)} of {len(self._evaluated)} regions trained")
        else:
            parts.append(f"{len(self._evaluated)} regions")
        parts.append(f"{now - self._last:.1f}s (total {now - self._start:.1f}s)")
        sim = self.sim_time(server_round) if self.sim_time is not None else None
        if sim is not None:
            parts.append(f"sim {sim_duration(sim)}")
        self.display.print(" | ".join(parts))
        if server_round > 0:
            status = " ".join(
                filter(
                    None,
                    [
                        f"train loss {self._train['loss']:.4g}" if "loss" in self._train else "",
                        f"test {_fmt(self._test, keys[1:])}",
                        f"server {_fmt(server, keys[1:])}" if server else "",
                        f"| trained {regions_text(trained)}",
                    ],
                )
            )
            self.display.update(server_round, status=status)
        self._last = now

    def close(self) -> None:
        """Stop the live bar."""
        self.display.close()
