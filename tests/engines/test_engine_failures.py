"""Failures on the deployment engine: a SuperNode dies mid-run; too few regions connect.

The first test drives the documented commands as a user would, each its own
process, with TLS and SuperNode authentication: ``fedglobal certs``,
``fedglobal keys``, ``fedglobal superlink --tls-dir --auth-keys``, one
``fedglobal client --tls-ca --auth-key`` per region and ``fedglobal run
--tls-ca``; then it kills one region's SuperNode (``flower-supernode``) mid-run.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fedglobal import data
from fedglobal.config import load_config
from fedglobal.engines.deployment import LoopbackDeployment, export_region_files
from fedglobal.engines.processes import (
    DIE_WITH_PARENT,
    descendants,
    free_port,
    http_ok,
    wait_until,
)
from fedglobal.run.folder import new_run_dir
from tests.engines.engine_helpers import (
    FEDGLOBAL,
    REGIONS,
    run_cli,
    start_fedglobal,
    write_experiment,
)

pytestmark = pytest.mark.slow


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _interrupt(proc: subprocess.Popen, timeout: float = 60) -> int:
    """Stop a ``fedglobal`` command as Ctrl-C/SIGTERM would; it must stop its own processes."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    return proc.wait(timeout=timeout)


def test_a_supernode_dies_mid_run_the_round_completes_and_names_the_region(tiny, tmp_path):
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=1, round_timeout=15.0)
    toml = write_experiment(tmp_path / "exp.toml", raw)
    files = export_region_files(load_config(raw), REGIONS, tmp_path / "data")
    certs, keys = tmp_path / "certs", tmp_path / "keys"
    assert run_cli("certs", str(certs)).returncode == 0
    assert run_cli("keys", str(keys), "--names", *REGIONS).returncode == 0
    port = free_port()
    link = start_fedglobal(
        *("superlink", "--host", "127.0.0.1", "--port", str(port)),
        *("--tls-dir", str(certs), "--auth-keys", str(keys)),
        log=tmp_path / "superlink.log",
    )
    clients: dict[str, subprocess.Popen] = {}
    run = None
    try:
        wait_until(
            lambda: "registered key(s)" in (tmp_path / "superlink.log").read_text(),
            timeout=120,
            what="the SuperLink to start and register the keys",
        )
        assert http_ok(f"https://127.0.0.1:{port}/health", cafile=certs / "ca.crt")
        for region in REGIONS:
            clients[region] = start_fedglobal(
                "client",
                "--region",
                region,
                "--data",
                str(files[region]),
                "--superlink",
                f"127.0.0.1:{port}",
                *("--tls-ca", str(certs / "ca.crt"), "--auth-key", str(keys / region)),
                log=tmp_path / f"client-{region}.log",
            )
        wait_until(
            lambda: all(
                "ready: region" in (tmp_path / f"client-{r}.log").read_text() for r in REGIONS
            ),
            timeout=180,
            what="the three clients to be ready",
        )
        run = subprocess.Popen(
            [
                *(FEDGLOBAL, "run", str(toml), "--superlink", f"127.0.0.1:{port}"),
                *("--tls-ca", str(certs / "ca.crt")),
                *("--output-dir", str(tmp_path / "runs")),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            preexec_fn=DIE_WITH_PARENT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        lines: list[str] = []
        round_zero = threading.Event()

        def pump() -> None:
            for line in run.stdout:
                lines.append(line)
                if line.startswith("round 0/1"):
                    round_zero.set()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        deadline = time.monotonic() + 240
        while not round_zero.wait(0.2) and run.poll() is None and time.monotonic() < deadline:
            pass
        assert round_zero.is_set(), "".join(lines[-40:])
        # round 1 starts now: europe's SuperNode dies (SIGKILL, no goodbye to the SuperLink)
        (supernode,) = [
            p
            for p in descendants(clients["europe"].pid)
            if "fedglobal.engines.supernode_main" in _cmdline(p)
        ]
        os.kill(supernode, signal.SIGKILL)
        assert run.wait(timeout=240) == 0, "".join(lines[-60:])
        reader.join(timeout=10)
        output = "".join(lines)
        assert "regions that failed during the run: europe" in output, output[-3000:]
        # the client command noticed its SuperNode died, stopped its ClientApp and exited
        assert clients["europe"].wait(timeout=60) != 0
    finally:
        for proc in [run, *clients.values(), link]:
            if proc is not None:
                _interrupt(proc)
    assert all(clients[r].returncode == 0 for r in ("africa", "asia"))  # Ctrl-C: clean exit
    assert link.returncode == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    failed = summary["failed_replies"]
    assert {f["region"] for f in failed} == {"europe"}
    assert {(f["round"], f["stage"]) for f in failed} >= {(1, "train")}
    history = (run_dir / "history.csv").read_text()
    trained = {
        line.split(",")[1]
        for line in history.splitlines()[1:]
        if line.startswith("1,") and ",train," in line
    }
    assert trained == {"africa", "asia", "all"}  # round 1 aggregated the two survivors


def test_too_few_regions_connect_the_error_says_how_many(tiny, tmp_path):
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=1, output_dir=str(tmp_path / "runs"))
    raw["engine"]["connect_timeout"] = 8.0
    cfg = load_config(raw)
    regions = data.list_regions(cfg)
    started = time.monotonic()
    deployment = LoopbackDeployment(cfg, regions, workdir=tmp_path / "work")
    try:
        deployment.start(supernodes=False)
        for region in ("africa", "asia"):  # europe's SuperNode never comes
            deployment.add_supernode(region)
        outcome = deployment.run(new_run_dir(cfg), quiet=True)
    finally:
        deployment.stop()
    assert not outcome.ok
    assert "waited 8s for 3 regional clients; only 2 connected" in outcome.describe()
    assert time.monotonic() - started < 120
