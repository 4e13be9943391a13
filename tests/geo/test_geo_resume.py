"""A resumed [geo] run continues the same clock (checkpoint and resume)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedglobal

pytestmark = pytest.mark.slow

REGIONS = ["Germany", "Japan", "Brazil"]


def _experiment(folder, rounds: int) -> dict:
    rng = np.random.default_rng(0)
    n = 150
    table = pd.DataFrame(
        {"region": rng.choice(REGIONS, n), "x1": rng.normal(size=n), "x2": rng.normal(size=n)}
    )
    table["y"] = 2 * table.x1 - table.x2 + rng.normal(scale=0.1, size=n)
    data = folder / "rows.csv"
    table.to_csv(data, index=False)
    return {
        "experiment": {"name": "geo-resume", "seed": 3, "rounds": rounds},
        "data": {"source": f"csv:{data}", "region": "region", "target": "y"},
        "model": {"hidden": [8]},
        "client": {"batch_size": 16, "learning_rate": 0.01},
        "strategy": {"name": "fedavg", "fraction_train": 0.67, "min_train_clients": 2},
        "server": {"checkpoint_every": 1},
        "output": {"plots": False, "tensorboard": False},
        # Monday 00:00 UTC, window 08:00-16:00: Tokyo (09:00) is open; Berlin opens at
        # 07:00 UTC, just as Tokyo closes; Brasilia (UTC-3) opens at 11:00 UTC, with
        # Berlin still open: the first round waits 11 hours for two regions.
        "geo": {
            "resolve": "names",
            "server": "Frankfurt",
            "policy": "overcommit",
            "availability": "08:00-16:00",
            "target": "r2 >= 0.5",
        },
    }


def test_a_resumed_run_continues_the_same_clock(tmp_path):
    reference = fedglobal.simulate(
        _experiment(tmp_path, 4), output_dir=tmp_path / "reference", quiet=True
    )
    first = fedglobal.simulate(_experiment(tmp_path, 2), output_dir=tmp_path / "run", quiet=True)
    resumed = fedglobal.simulate(
        _experiment(tmp_path, 2),
        overrides=["experiment.rounds=4"],
        resume=first.run_dir,
        quiet=True,
    )
    assert resumed.summary["resumed_from"]["round"] == 2
    pd.testing.assert_frame_equal(resumed.sim_times, reference.sim_times)
    columns = ["round", "sim_start_s", "sim_end_s"]
    pd.testing.assert_frame_equal(resumed.rounds[columns], reference.rounds[columns])
    assert resumed.summary["sim_total_s"] == reference.summary["sim_total_s"]
    split = reference.summary["geo"]["time_split"]
    assert split["waiting_for_availability_s"] == pytest.approx(11 * 3600, abs=1.0)
    assert reference.rounds.sim_start_s[1] == pytest.approx(11 * 3600, abs=1.0)
    assert resumed.summary["geo"]["time_split"] == split
