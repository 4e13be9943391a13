"""The progress line shows the simulated time of each round's end ([geo])."""

from __future__ import annotations

import io

from rich.console import Console

from fedglobal.server.progress import RoundProgress, sim_duration


def test_sim_duration_picks_a_readable_unit():
    assert sim_duration(0.674) == "0.674 s"
    assert sim_duration(600.0) == "10 min"
    assert sim_duration(3 * 3600 + 720) == "3.2 h"


def test_each_line_ends_with_the_simulated_time():
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=False, width=200, highlight=False)
    progress = RoundProgress(2, "regression", console=console)
    ends = {0: 0.0, 1: 90.0, 2: 4 * 3600.0}
    progress.sim_time = ends.get
    for r in range(3):
        if r:
            progress(r, "train", {"loss": 1.0}, ["a", "b"])
        progress(r, "test", {"loss": 1.0, "mae": 1.0, "r2": 0.5}, ["a", "b"])
    progress.close()
    lines = buffer.getvalue().splitlines()
    assert [line.rsplit(" | ", 1)[1] for line in lines] == ["sim 0 s", "sim 90 s", "sim 4 h"]
