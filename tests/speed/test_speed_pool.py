"""The worker pool (experiment.workers): same history as in-process, no process left behind."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedglobal
from fedglobal.engines import pool

pytestmark = pytest.mark.slow


def _children() -> list[int]:
    """Live child processes of this process (from /proc), but multiprocessing's own
    resource tracker (started by the spawn context, shared, ends with this process)."""
    me = os.getpid()
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            if b"resource_tracker" not in (entry / "cmdline").read_bytes():
                out.append(int(entry.name))
    return out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    rng = np.random.default_rng(3)
    frames = []
    for i, n in enumerate((30, 45, 25, 60, 35)):
        x = rng.normal(size=(n, 4))
        y = (x @ np.array([1.0, -1.0, 0.5, 0.0]) + 0.3 * i > 0).astype(int)
        frame = pd.DataFrame(x, columns=list("abcd"))
        frame.insert(0, "r", f"r{i}")
        frame["y"] = y
        frames.append(frame)
    folder = tmp_path_factory.mktemp("pool")
    pd.concat(frames).to_csv(folder / "rows.csv", index=False)
    return {
        "experiment": {"rounds": 1, "seed": 7, "output_dir": str(folder / "runs")},
        "data": {
            "source": f"csv:{folder / 'rows.csv'}",
            "region": "r",
            "target": "y",
            "task": "classification",
        },
        "model": {"name": "mlp", "hidden": [4]},
        "client": {"batch_size": 8, "optimizer": "adam", "learning_rate": 0.01},
        "strategy": {"fraction_train": 0.6, "min_train_clients": 2},
        "output": {"tensorboard": False, "plots": False},
    }


def _with(raw: dict, **sections: dict) -> dict:
    out = {k: dict(v) for k, v in raw.items()}
    for name, values in sections.items():
        out.setdefault(name, {}).update(values)
    return out


@pytest.mark.parametrize("cohort", [False, True])
def test_pool_gives_the_same_history_as_in_process(experiment, cohort):
    base = _with(experiment, client={"cohort": cohort})
    alone = fedglobal.simulate(base, quiet=True).history
    pooled = fedglobal.simulate(_with(base, experiment={"workers": 2}), quiet=True).history
    pd.testing.assert_frame_equal(alone, pooled)
    assert _children() == []
    assert pool.STARTED and not any(_alive(pid) for pid in pool.STARTED)


def test_regions_with_client_state_stay_with_their_worker(experiment):
    """FedPer keeps each region's head in its Context: over 3 rounds of 3 of 5 regions,
    a region must come back to the process holding its head, or its personalised
    results would differ from the single-process run."""
    base = _with(
        experiment,
        experiment={"rounds": 3, "seed": 1},  # round 1 trains r1 in process 0, not 1
        strategy={"name": "fedper", "fraction_train": 0.6, "min_train_clients": 2},
    )
    alone = fedglobal.simulate(base, quiet=True).history
    pooled = fedglobal.simulate(_with(base, experiment={"workers": 2}), quiet=True).history
    pd.testing.assert_frame_equal(alone, pooled)


@pytest.mark.usefixtures("task_identity")
def test_each_delivery_is_shared_out_evenly_but_state_stays_home():
    from flwr.app import Message, RecordDict

    def items(nodes):
        return [(n, f"r{n}", Message(RecordDict(), n, "train")) for n in nodes]

    with pool.WorkerPool(2, "clients.app:app", None, run_id=1, in_process=True) as workers:
        # a fixed i % 2 map would give slot 1 none of these; ties go to the worker (1)
        assert workers.shares(items([2, 4, 6, 8])) == {1: [0, 2], 0: [1, 3]}
        workers._home.update({4: 0, 8: 0})  # 4 and 8 hold state in this process
        assert workers.shares(items([2, 4, 6, 8])) == {1: [0, 2], 0: [1, 3]}
        assert workers.shares(items([4, 8, 1])) == {0: [0, 1], 1: [2]}
        workers._replace(0, "test")  # slot 1's state is lost with it, slot 0's kept
        assert workers._home == {4: 0, 8: 0}
        workers._home.clear()
        workers.costs = {"r2": 5.0, "r4": 1.0, "r6": 1.0, "r8": 3.0}  # rows: balance the work
        assert workers.shares(items([2, 4, 6, 8])) == {1: [0], 0: [1, 2, 3]}
    assert not any(_alive(pid) for pid in pool.STARTED)


def test_workers_are_gone_after_an_exception(experiment):
    def boom(server_round, metrics):
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        fedglobal.simulate(_with(experiment, experiment={"workers": 2}), quiet=True, hooks=[boom])
    assert _children() == []
    assert pool.STARTED and not any(_alive(pid) for pid in pool.STARTED)


def _alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False
