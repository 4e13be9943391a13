"""Progress: plain lines in logs, a live bar on a terminal, nothing when quiet."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from fedglobal.server.progress import RoundProgress, TaskProgress, regions_text

REGIONS = ["east", "north", "south", "west"]


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=160, highlight=False), buffer


def _feed(progress: RoundProgress, rounds: int = 2, server: bool = False) -> None:
    progress(0, "test", {"loss": 9.0, "mae": 2.0, "r2": -0.5}, REGIONS)
    if server:
        progress(0, "server", {"loss": 9.5, "r2": -0.6}, [])
    for r in range(1, rounds + 1):
        progress(r, "train", {"loss": 5.0 / r}, REGIONS[:3])
        progress(r, "test", {"loss": 4.0 / r, "mae": 1.0, "r2": 0.5}, REGIONS)
        if server:
            progress(r, "server", {"loss": 4.5 / r, "r2": 0.4}, [])
    progress.close()


def test_plain_lines_when_not_a_terminal():
    console, buffer = _console(terminal=False)
    progress = RoundProgress(2, "regression", console=console)
    assert not progress.display.live
    _feed(progress)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("round 0/2 | test(all) loss 9 mae 2 r2 -0.5 | 4 regions")
    assert re.match(
        r"round 2/2 \| train loss 2\.5 \| test\(all\) loss 2 mae 1 r2 0\.5 \| "
        r"3 of 4 regions trained \| \d+\.\ds \(total \d+\.\ds\)$",
        lines[2],
    )
    assert "\x1b[" not in buffer.getvalue()  # no escape codes in logs


def test_server_metrics_join_the_line_when_expected():
    console, buffer = _console(terminal=False)
    progress = RoundProgress(1, "regression", console=console)
    progress.expect_server = True
    _feed(progress, rounds=1, server=True)
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2
    assert "| server loss 4.5 r2 0.4 |" in lines[1]


def test_quiet_prints_nothing_even_on_a_terminal():
    console, buffer = _console(terminal=True)
    progress = RoundProgress(2, "classification", quiet=True, console=console)
    _feed(progress)
    assert buffer.getvalue() == ""


def test_live_bar_on_a_terminal_shows_round_eta_regions_and_metrics():
    console, buffer = _console(terminal=True)
    progress = RoundProgress(2, "regression", console=console)
    assert progress.display.live
    _feed(progress)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert "rounds" in text and "2/2" in text and "ETA" in text
    assert "trained 3 regions (east, north, south)" in text
    assert "train loss 2.5" in text and "r2 0.5" in text
    assert "round 1/2 | train loss 5" in text  # the round lines are kept above the bar


def test_task_progress_is_reusable_for_any_loop():
    console, buffer = _console(terminal=False)
    with TaskProgress(3, description="benchmark", unit="run", console=console) as progress:
        for i in range(1, 4):
            progress.update(i, status=f"cell {i}")
            progress.print(f"run {i}/3 done")
    assert buffer.getvalue().splitlines() == ["run 1/3 done", "run 2/3 done", "run 3/3 done"]
    console, buffer = _console(terminal=True)
    with TaskProgress(2, description="grid", unit="run", console=console) as progress:
        progress.update(1, status="half way")
    assert "half way" in buffer.getvalue() and "1/2" in buffer.getvalue()


def test_regions_text():
    assert regions_text(["b", "a"]) == "2 regions (a, b)"
    assert regions_text(["x"]) == "1 region (x)"
    assert regions_text([f"r{i}" for i in range(5)]) == "5 regions (r0, r1, r2, +2)"
    assert regions_text([]) == "no regions"


@pytest.mark.slow
def test_cli_prints_plain_round_lines_in_logs(make_experiment, tmp_path: Path):
    import tomli_w

    experiment = tmp_path / "tiny.toml"
    experiment.write_text(tomli_w.dumps(make_experiment("cli-lines")))
    fedglobal_bin = Path(sys.executable).parent / "fedglobal"
    out = subprocess.run(
        [str(fedglobal_bin), "simulate", str(experiment)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("round ")]
    assert [line.split(" |")[0] for line in lines] == ["round 0/2", "round 1/2", "round 2/2"]
    assert "\x1b[" not in out.stderr
    assert "run folder:" in out.stdout


@pytest.mark.slow
def test_quiet_run_prints_no_round_lines(make_experiment, capfd):
    import fedglobal

    fedglobal.simulate(make_experiment("quiet"), quiet=True)
    captured = capfd.readouterr()
    assert not [line for line in captured.err.splitlines() if line.startswith("round ")]
