"""The console of a fedglobal command shows fedglobal's own lines only, unless --verbose.

Real commands in real subprocesses, their whole output captured. The user's
environment is imitated: no TF_CPP_MIN_LOG_LEVEL (the test session sets one).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedglobal.runtime.quiet import is_notice

ROOT = Path(__file__).resolve().parents[2]

#: What fedglobal itself prints during a simulate run.
OWN_LINE = re.compile(r"^(round \d+/\d+ \||run folder: |final test metrics )")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL",)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env.pop("FEDGLOBAL_VERBOSE", None)
    env.update(extra)
    return env


def _python(code: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=_env(**extra),
        cwd=ROOT, timeout=300,
    )  # fmt: skip


def test_notices_are_recognised_and_errors_are_not():
    assert is_notice(
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
    )
    assert is_notice(
        "I0000 00:00:1796461569.886052   12100 port.cc:153] oneDNN custom operations are on."
    )
    assert is_notice(
        "I0000 00:00:1796461569.891260   12100 cudart_stub.cc:31] Could not find cuda drivers"
    )
    assert not is_notice("E0000 00:00:1796461574.994682   12100 cuda_platform.cc:52] failed")
    assert is_notice(
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags."
    )
    assert not is_notice("fedglobal: error: something")
    assert not is_notice("round 1/2 | train loss 3")


def test_importing_tensorflow_after_fedglobal_prints_nothing():
    quiet = _python("import fedglobal, tensorflow; print('ok')")
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "ok\n"
    # what the filter drops is exactly TensorFlow's notices: verbose shows TensorFlow's own
    plain = _python("import tensorflow")
    verbose = _python("import fedglobal, tensorflow", FEDGLOBAL_VERBOSE="1")
    assert len(verbose.stderr.splitlines()) == len(plain.stderr.splitlines())
    kept = [line for line in plain.stderr.splitlines() if not is_notice(line)]
    assert quiet.stderr.splitlines() == kept


def test_a_process_without_stderr_imports_tensorflow():
    out = subprocess.run(
        [sys.executable, "-c", "import fedglobal, tensorflow; print('ok')"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(), timeout=300,
        close_fds=True, pass_fds=(),
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout == "ok\n"
    closed = subprocess.run(
        ["bash", "-c", f"{sys.executable} -c \"import fedglobal, tensorflow; print('ok')\" 2>&-"],
        capture_output=True, text=True, env=_env(), timeout=300,
    )  # fmt: skip
    assert closed.returncode == 0 and closed.stdout == "ok\n", closed.stderr


def test_python_errors_during_the_quiet_import_still_reach_stderr():
    out = _python(
        "import fedglobal, sys\n"
        "import tensorflow\n"
        "print('after', file=sys.stderr)\n"
        "raise SystemExit('fedglobal: error: shown')\n"
    )
    assert out.returncode == 1
    assert out.stderr.splitlines()[-2:] == ["after", "fedglobal: error: shown"]


@pytest.mark.slow
def test_simulate_prints_only_its_own_lines(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    x = rng.normal(size=(n, 2))
    table = pd.DataFrame(
        {"region": rng.choice(["a", "b", "c"], n), "x1": x[:, 0], "x2": x[:, 1], "y": x[:, 0]}
    )
    table.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "e.toml").write_text(
        '[experiment]\nname = "quiet"\nrounds = 2\n'
        f'[data]\nsource = "csv:{tmp_path / "rows.csv"}"\nregion = "region"\ntarget = "y"\n'
        "[model]\nhidden = [4]\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "fedglobal.cli", "simulate", str(tmp_path / "e.toml"),
         "--output-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert [line for line in lines if not OWN_LINE.match(line)] == [], lines
    assert sum(line.startswith("round ") for line in lines) == 3  # rounds 0, 1, 2
