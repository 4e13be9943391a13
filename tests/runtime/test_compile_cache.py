"""The persistent XLA program cache (fedglobal/runtime/compile_cache.py).

Programs are compiled in fresh interpreters (TensorFlow reads TF_XLA_FLAGS once
per process); the folder handling runs here on temporary folders.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import tomli_w

from fedglobal.runtime import compile_cache

ROOT = Path(__file__).resolve().parents[2]

COMPILE = """
import json, os
from fedglobal.runtime import compile_cache
private = compile_cache.enable()
before = {p.name: p.stat().st_nlink for p in private.iterdir()}
import tensorflow as tf
@tf.function(jit_compile=True)
def f(x):
    return tf.reduce_sum(tf.sin(x) * 3.0)
value = float(f(tf.range(5, dtype=tf.float32)))
compile_cache.flags_read()
print(json.dumps({
    "private": str(private), "before": before, "after": sorted(os.listdir(private)),
    "value": value, "flags": os.environ.get("TF_XLA_FLAGS"),
    "owned": os.environ.get("FEDGLOBAL_COMPILE_CACHE_DIR"),
}))
"""


def _compile(cache: Path) -> dict:
    env = {**os.environ, compile_cache.ENV: str(cache), "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TF_XLA_FLAGS", None)
    env.pop(compile_cache.OWNED_ENV, None)
    out = subprocess.run(
        [sys.executable, "-c", COMPILE], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _root(cache: Path) -> Path:
    (root,) = [p for p in cache.iterdir() if p.name.startswith("tf-")]
    return root


def test_a_program_is_published_at_exit_then_linked_into_the_next_process(tmp_path):
    first = _compile(tmp_path)
    assert first["before"] == {}  # nothing published yet
    assert len(first["after"]) == 1 and first["after"][0].endswith("XLA_CPU_JIT.pb")
    root = _root(tmp_path)
    assert [p.name for p in (root / "entries").iterdir()] == first["after"]
    assert not list(root.glob("proc-*"))  # the private folder went at exit
    assert first["flags"] is None and first["owned"] is None  # environment restored

    second = _compile(tmp_path)
    # the published entry is linked (2 names, 1 file) before TensorFlow compiles anything
    assert second["before"] == {first["after"][0]: 2}
    assert second["after"] == first["after"] and second["value"] == first["value"]
    assert len(list((root / "entries").iterdir())) == 1
    assert not list(root.glob("proc-*"))


def _fresh_state(monkeypatch, env: dict) -> None:
    monkeypatch.setattr(compile_cache, "_state", {})
    for name in ("TF_XLA_FLAGS", compile_cache.OWNED_ENV, compile_cache.ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    "env",
    [
        {compile_cache.ENV: "off"},
        {"TF_XLA_FLAGS": "--tf_xla_persistent_cache_directory=/somewhere/mine"},
    ],
    ids=["off", "users-own-folder"],
)
def test_off_or_a_users_own_folder_changes_nothing(monkeypatch, env):
    _fresh_state(monkeypatch, env)
    assert compile_cache.enable() is None
    assert os.environ.get("TF_XLA_FLAGS") == env.get("TF_XLA_FLAGS")
    assert compile_cache.OWNED_ENV not in os.environ


def test_a_cache_folder_that_cannot_be_made_means_no_cache(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _fresh_state(monkeypatch, {compile_cache.ENV: str(blocker / "cache")})
    assert compile_cache.enable() is None
    assert "TF_XLA_FLAGS" not in os.environ and compile_cache.OWNED_ENV not in os.environ


def test_a_child_takes_its_own_folder_and_dead_processes_folders_go(monkeypatch, tmp_path):
    parent = tmp_path / "parent-folder"
    inherited = f"--xla_cpu_something=1 {compile_cache.FLAG}={parent}"
    _fresh_state(
        monkeypatch,
        {
            compile_cache.ENV: str(tmp_path),
            "TF_XLA_FLAGS": inherited,
            compile_cache.OWNED_ENV: str(parent),
        },
    )
    root = compile_cache.cache_root()
    ended = subprocess.Popen(["true"])
    ended.wait()
    host = socket.gethostname()
    dead = root / f"proc-{ended.pid}-0000-{host}"
    alive = root / f"proc-{os.getppid()}-1111-{host}"
    elsewhere = root / f"proc-{ended.pid}-2222-another-host"  # a shared home's other machine
    for folder in (dead, alive, elsewhere):
        folder.mkdir(parents=True)
        (folder / "half-written.pb").write_bytes(b"\x08")

    private = compile_cache.enable()
    assert private is not None and private.parent == root
    assert os.environ["TF_XLA_FLAGS"] == f"--xla_cpu_something=1 {compile_cache.FLAG}={private}"
    assert not dead.exists() and alive.is_dir()  # a live process's folder is its own
    assert elsewhere.is_dir()  # its pid means nothing here
    compile_cache.flags_read()
    assert os.environ["TF_XLA_FLAGS"] == "--xla_cpu_something=1"
    assert compile_cache.OWNED_ENV not in os.environ
    compile_cache.flags_read()  # every later cohort compile calls it again: nothing changes
    assert os.environ["TF_XLA_FLAGS"] == "--xla_cpu_something=1"

    (private / "new-program.pb").write_bytes(b"complete")
    compile_cache._publish(private, root / "entries", os.getpid())
    assert [p.name for p in (root / "entries").iterdir()] == ["new-program.pb"]
    assert not private.exists()


def test_the_oldest_entries_go_past_the_size_limit(tmp_path):
    for age, name in enumerate(["old", "middle", "new"]):
        path = tmp_path / f"{name}.pb"
        path.write_bytes(b"x" * 100)
        os.utime(path, (1_000 + age, 1_000 + age))
    compile_cache._evict(tmp_path, limit=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["middle.pb", "new.pb"]


def test_a_cohort_run_from_a_warm_cache_gives_the_same_history(tmp_path):
    raw = {
        "experiment": {"name": "warm", "seed": 0, "rounds": 2},
        "data": {"source": "synthetic:fedprox", "task": "classification", "num_regions": 6},
        "model": {"name": "logistic"},
        "client": {"batch_size": 10, "epochs": 2, "cohort": True},
        "strategy": {"name": "fedavg", "min_available_clients": 6},
        "output": {"tensorboard": False, "plots": False},
    }
    config = tmp_path / "warm.toml"
    config.write_text(tomli_w.dumps(raw))
    env = {**os.environ, compile_cache.ENV: str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "fedglobal.cli", "simulate", str(config), "--quiet"]
    histories = []
    for run in ("cold", "warm"):
        out_dir = tmp_path / run
        done = subprocess.run(
            [*command, "--output-dir", str(out_dir)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        (run_dir,) = out_dir.iterdir()
        histories.append(pd.read_csv(run_dir / "history.csv"))
        entries = list((_root(tmp_path / "cache") / "entries").iterdir())
        assert entries, "the cohort program was not published"
        if run == "cold":
            published = sorted(p.name for p in entries)
    assert sorted(p.name for p in entries) == published  # the warm run compiled nothing new
    pd.testing.assert_frame_equal(histories[0], histories[1])
