"""Checkpoint and resume (issue 6), with real processes and real training.

A ``fedglobal simulate`` subprocess is SIGKILLed once its checkpoint of round
k exists; resuming it must give the global weights of an uninterrupted run
with the same seed, bit for bit, for fedavg, fedadam, layerwise with
per-layer intervals (whose regions keep layers between rounds: client state)
scaffold (control variates on the server and in each region's state) and
ditto (each region's personal model, in its state, evaluated every round).
Corrupt and missing checkpoints must be refused with a clear error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedglobal
from fedglobal.errors import CheckpointError, ConfigError
from fedglobal.run import checkpoint

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 5

STRATEGIES = {
    "fedavg": '[strategy]\nname = "fedavg"\n',
    "fedadam": '[strategy]\nname = "fedadam"\neta = 0.05\n',
    # the server's control variate (state_dict) and each region's own (ClientApp state)
    "scaffold": '[strategy]\nname = "scaffold"\n',
    # each region's personal model (ClientApp state), which federated evaluation uses
    "ditto": '[strategy]\nname = "ditto"\nlam = 0.1\n',
    # hidden layers aggregated every 2nd round, the output every 3rd: in between,
    # each region continues from its own copy (ClientApp state the checkpoint keeps)
    "layerwise": """[strategy]
name = "layerwise"

[[strategy.layers]]
match = "hidden_*"
interval = 2

[[strategy.layers]]
match = "output/*"
interval = 3
""",
}


def _table(n: int = 180, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(["east", "north", "south"], n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    shift = pd.Series(region).map({"east": 0.0, "north": 1.0, "south": -1.0}).to_numpy()
    y = 3 * x1 - 2 * x2 + shift + rng.normal(scale=0.3, size=n)
    return pd.DataFrame({"region": region, "x1": x1, "x2": x2, "y": y})


def _experiment(folder: Path, strategy: str, every: int) -> Path:
    """A tiny experiment file: 3 regions, 180 rows, MLP [8], ROUNDS rounds."""
    data = folder / "data.csv"
    if not data.exists():
        _table().to_csv(data, index=False)
    path = folder / f"{strategy}.toml"
    path.write_text(
        f"""[experiment]
name = "{strategy}"
seed = 7
rounds = {ROUNDS}

[data]
source = "csv:{data}"
region = "region"
target = "y"

[model]
hidden = [8]

[client]
learning_rate = 0.01
batch_size = 16

[server]
checkpoint_every = {every}

[output]
plots = false
tensorboard = false

{STRATEGIES[strategy]}"""
    )
    return path


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedglobal.cli", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _checkpoint_round(output_dir: Path) -> tuple[Path | None, int]:
    for run_dir in output_dir.glob("*"):
        if (run_dir / checkpoint.CHECKPOINT).is_file():
            return run_dir, checkpoint.read(run_dir / checkpoint.CHECKPOINT).round
    return None, 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill_after_checkpoint(experiment: Path, output_dir: Path, k: int) -> Path:
    """Start ``fedglobal simulate``, SIGKILL it (by pid) once round k's checkpoint exists."""
    proc = subprocess.Popen(
        _cli("simulate", str(experiment), "--output-dir", str(output_dir), "--quiet"),
        cwd=experiment.parent,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: survivors would show as orphans
    )
    try:
        deadline = time.monotonic() + 600
        while True:
            run_dir, done = _checkpoint_round(output_dir)
            if done >= k:
                os.kill(proc.pid, signal.SIGKILL)
                break
            if proc.poll() is not None:
                pytest.fail(
                    f"simulate ended before round {k}: {proc.stderr.read().decode()[-2000:]}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no checkpoint of round {k} within 600 s")
            time.sleep(0.02)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        for _ in range(50):  # the group empties once the kernel has reaped everything
            if not _group_alive(proc.pid):
                break
            time.sleep(0.1)
        assert not _group_alive(proc.pid), "the killed run left processes behind"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    assert run_dir is not None
    assert not (run_dir / "summary.json").exists(), "the run finished before it was killed"
    assert k <= checkpoint.read(run_dir / checkpoint.CHECKPOINT).round < ROUNDS
    return run_dir


def _weights(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / "checkpoint.npz") as npz:
        return {k: npz[k] for k in npz.files}


def _assert_same_run(resumed: Path, reference: Path) -> None:
    a, b = _weights(resumed), _weights(reference)
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype
        assert np.array_equal(a[name], b[name]), f"{name} differs from the uninterrupted run"
    pd.testing.assert_frame_equal(
        pd.read_csv(resumed / "history.csv"), pd.read_csv(reference / "history.csv")
    )


@pytest.mark.parametrize(
    ("strategy", "every", "via"),
    [
        ("fedavg", 1, "cli"),
        ("fedadam", 1, "python"),
        ("layerwise", 2, "python"),
        ("scaffold", 1, "python"),
        ("ditto", 2, "python"),
    ],
)
def test_killed_run_resumes_bit_for_bit(tmp_path, strategy, every, via):
    experiment = _experiment(tmp_path, strategy, every)
    reference = fedglobal.simulate(experiment, output_dir=tmp_path / "reference", quiet=True)
    run_dir = _kill_after_checkpoint(experiment, tmp_path / "killed", k=2)
    if via == "cli":
        done = subprocess.run(
            _cli("simulate", str(experiment), "--resume", str(run_dir), "--quiet"),
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"run folder: {run_dir}" in done.stdout
    else:
        result = fedglobal.simulate(experiment, resume=run_dir, quiet=True)
        assert result.run_dir == run_dir
    _assert_same_run(run_dir, reference.run_dir)
    resumed = fedglobal.load_run(run_dir)
    assert resumed.summary["resumed_from"]["round"] >= 2
    assert resumed.summary["rounds"] == ROUNDS


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished fedadam run with checkpoints after every round (the last is round ROUNDS)."""
    folder = tmp_path_factory.mktemp("finished")
    experiment = _experiment(folder, "fedadam", 1)
    return fedglobal.simulate(experiment, output_dir=folder / "runs", quiet=True).run_dir


def test_checkpoint_holds_the_run_state(finished_run):
    ckpt = checkpoint.read(finished_run / checkpoint.CHECKPOINT)
    prev = checkpoint.read(finished_run / checkpoint.PREVIOUS)
    assert (ckpt.round, prev.round) == (ROUNDS, ROUNDS - 1)
    final = _weights(finished_run)
    for name, value in ckpt.weights.items():
        assert np.array_equal(value, final[name])
    assert ckpt.strategy_state["strategy"] == "FedAdam"
    assert set(ckpt.strategy_state["m"]) == set(ckpt.weights)
    assert max(row[0] for row in ckpt.history) == ROUNDS
    assert [r["round"] for r in ckpt.monitor["round_rows"]] == list(range(ROUNDS + 1))


def test_resuming_a_finished_run_needs_more_rounds(finished_run):
    experiment = finished_run.parent.parent / "fedadam.toml"
    with pytest.raises(ConfigError, match="nothing left to run"):
        fedglobal.simulate(experiment, resume=finished_run, quiet=True)


def test_resuming_under_another_experiment_is_refused(finished_run):
    experiment = finished_run.parent.parent / "fedadam.toml"
    with pytest.raises(ConfigError, match=r"client\.learning_rate: 0\.01 in the checkpoint, 0\.1"):
        fedglobal.simulate(
            experiment,
            overrides=["client.learning_rate=0.1", "experiment.rounds=9"],
            resume=finished_run,
        )


def _corrupt_copy(finished_run: Path, tmp_path: Path, how: str) -> Path:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    path = run_dir / checkpoint.CHECKPOINT
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[len(data) // 2 :]
    else:  # flip bytes in the middle (inside a member's data)
        for i in range(len(data) // 2, len(data) // 2 + 8):
            data[i] ^= 0xFF
    path.write_bytes(bytes(data))
    return run_dir


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_a_corrupt_checkpoint_is_refused(finished_run, tmp_path, how):
    run_dir = _corrupt_copy(finished_run, tmp_path, how)
    latest = run_dir / checkpoint.CHECKPOINT
    with pytest.raises(CheckpointError, match=r"resume\.npz is (torn or )?corrupt") as info:
        checkpoint.read(latest)
    assert str(latest) in str(info.value)
    # a run folder falls back to the previous, intact checkpoint, with a warning
    assert checkpoint.load(run_dir).round == ROUNDS - 1
    # with both corrupt, nothing is resumed, and both files are named
    (run_dir / checkpoint.PREVIOUS).write_bytes(latest.read_bytes())
    with pytest.raises(CheckpointError, match="no intact checkpoint") as info:
        checkpoint.load(run_dir)
    assert "resume.prev.npz" in str(info.value)


def test_a_corrupt_checkpoint_is_refused_by_the_cli(finished_run, tmp_path, capsys):
    from fedglobal.cli.main import main

    run_dir = _corrupt_copy(finished_run, tmp_path, "flip")
    (run_dir / checkpoint.PREVIOUS).unlink()
    experiment = finished_run.parent.parent / "fedadam.toml"
    code = main(["simulate", str(experiment), "--resume", str(run_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert "fedglobal: error: checkpoint" in err and "resume.npz is" in err


def test_resume_from_a_folder_without_checkpoint_is_refused(finished_run, tmp_path, capsys):
    from fedglobal.cli.main import main

    experiment = finished_run.parent.parent / "fedadam.toml"
    code = main(["simulate", str(experiment), "--resume", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {tmp_path}: it has no checkpoint (resume.npz)" in err
    code = main(["simulate", str(experiment), "--resume", str(tmp_path / "nowhere")])
    assert code == 2
    assert "no such run folder or checkpoint file" in capsys.readouterr().err


def _copy(finished_run: Path, tmp_path: Path) -> Path:
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    return run_dir


def test_resume_from_the_run_folder_alone_extends_the_run(finished_run, tmp_path, capsys):
    """``fedglobal simulate --resume RUN --set experiment.rounds=N``: no experiment file."""
    from fedglobal.cli.main import main

    run_dir = _copy(finished_run, tmp_path)
    code = main(["simulate", "--resume", str(run_dir), "--set", f"experiment.rounds={ROUNDS + 1}"])
    assert code == 0, capsys.readouterr().err
    resumed = fedglobal.load_run(run_dir)
    assert resumed.summary["rounds"] == ROUNDS + 1
    assert resumed.summary["resumed_from"]["round"] == ROUNDS
    assert resumed.config.client.learning_rate == 0.01  # the run's own experiment


def test_resume_with_the_file_but_not_the_first_runs_overrides(finished_run, tmp_path, caplog):
    """The first run's ``--set`` overrides need not be repeated: the checkpoint's wins."""
    run_dir = _copy(finished_run, tmp_path)
    original = (finished_run.parent.parent / "fedadam.toml").read_text()
    edited = tmp_path / "fedadam.toml"  # as if the first run had --set client.learning_rate=0.01
    edited.write_text(original.replace("learning_rate = 0.01", "learning_rate = 0.05"))
    with caplog.at_level("WARNING", logger="fedglobal.simulation"):
        result = fedglobal.simulate(
            edited, overrides=[f"experiment.rounds={ROUNDS + 1}"], resume=run_dir, quiet=True
        )
    assert "differs in client.learning_rate" in caplog.text
    assert result.summary["rounds"] == ROUNDS + 1
    assert result.config.client.learning_rate == 0.01


def test_simulate_without_experiment_or_resume_is_a_usage_error(capsys):
    from fedglobal.cli.main import main

    with pytest.raises(SystemExit) as exited:
        main(["simulate"])
    assert exited.value.code == 2
    assert "required: experiment (or --resume)" in capsys.readouterr().err
