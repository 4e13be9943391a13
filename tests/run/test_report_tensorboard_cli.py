"""``fedglobal tensorboard``: starts the real TensorBoard, which serves the runs' scalars."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fedglobal.cli.main import main as cli_main

pytestmark = pytest.mark.slow


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return response.read()


def test_tensorboard_serves_the_runs(tiny_runs, tmp_path: Path):
    pytest.importorskip("tensorboard")
    logdir = tiny_runs.fedavg.run_dir.parent
    log = (tmp_path / "tensorboard.log").open("w+")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "fedglobal"), "tensorboard", str(logdir), "--port", "0"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = None
        deadline = time.monotonic() + 120
        while url is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.5)
            log.seek(0)
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", log.read())
            url = found.group(1) if found else None
        log.seek(0)
        assert url, f"TensorBoard did not start: {log.read()[-2000:]}"
        runs: list = []
        while time.monotonic() < deadline:  # TensorBoard loads event files in the background
            runs = json.loads(_get(f"{url}/data/runs"))
            if any(tiny_runs.fedavg.run_dir.name in run for run in runs):
                break
            time.sleep(0.5)
        assert any(tiny_runs.fedavg.run_dir.name in run for run in runs), runs
        tags = json.loads(_get(f"{url}/data/plugin/scalars/tags"))
        ours = next(v for k, v in tags.items() if tiny_runs.fedavg.run_dir.name in k)
        assert {"test/r2", "server/r2", "comm/bytes_sent", "weight_norm/output/kernel"} <= set(ours)
        process.terminate()  # SIGTERM to fedglobal only: it must end TensorBoard itself
        process.wait(timeout=30)
        assert _group_gone(process.pid, timeout=15), "TensorBoard outlived fedglobal"
    finally:
        if process.poll() is None or not _group_gone(process.pid, timeout=0):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _group_gone(pgid: int, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def test_tensorboard_command_and_errors(tmp_path: Path, capsys):
    assert cli_main(["tensorboard", str(tmp_path), "--print-command", "--port", "7007"]) == 0
    command = capsys.readouterr().out.split()
    assert command[1:3] == ["-m", "tensorboard.main"]
    assert command[command.index("--logdir") + 1] == str(tmp_path)
    assert command[command.index("--port") + 1] == "7007"
    assert cli_main(["tensorboard", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
