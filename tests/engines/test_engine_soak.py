"""Soak: 200 in-process regions for 50 rounds; the server's memory must not grow per round.

Each region has 12 rows; the model is a 4-unit MLP trained by cohort
(``[client] cohort = "auto"``). A server hook reads this process's resident
set size (``VmRSS``) at the end of every round. The slope of a least-squares
line over rounds 10..50 must stay below 0.5 MB per round. What legitimately
grows is the history (about 1,000 rows a round here, ~0.1 MB); a leak of one
model copy or one message per region per round would be far above the bound.
"""

from __future__ import annotations

import numpy as np
import pytest

import fedglobal
from tests.engines.engine_helpers import write_regions

pytestmark = pytest.mark.slow

REGIONS = 200
ROUNDS = 50
ROWS = 12
MAX_SLOPE_MB = 0.5


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_200_regions_for_50_rounds_do_not_grow_the_servers_memory(tmp_path):
    write_regions(tmp_path / "rows.csv", REGIONS, ROWS)
    rss: dict[int, float] = {}

    def record(server_round: int, metrics: dict) -> None:
        rss[server_round] = _rss_mb()

    raw = {
        "experiment": {
            "name": "soak",
            "seed": 1,
            "rounds": ROUNDS,
            "output_dir": str(tmp_path / "runs"),
        },
        "data": {"source": f"csv:{tmp_path / 'rows.csv'}", "region": "region", "target": "y"},
        "model": {"name": "mlp", "hidden": [4]},
        "client": {"epochs": 1, "batch_size": 16, "learning_rate": 0.01, "cohort": "auto"},
        "strategy": {"name": "fedavg", "min_train_clients": 2, "min_evaluate_clients": 2},
        "server": {"checkpoint_every": 0},
        "output": {"tensorboard": False, "plots": False},
    }
    result = fedglobal.simulate(raw, quiet=True, hooks=[record])
    assert sorted(rss) == list(range(1, ROUNDS + 1))
    assert result.summary["failed_replies"] == []
    h = result.history
    assert h[(h["round"] == ROUNDS) & (h.split == "train")].region.nunique() == REGIONS + 1
    rounds = np.arange(10, ROUNDS + 1)
    slope = float(np.polyfit(rounds, [rss[r] for r in rounds], 1)[0])
    print(
        f"RSS {rss[10]:.1f} MB at round 10, {rss[ROUNDS]:.1f} MB at {ROUNDS}: {slope:.3f} MB/round"
    )
    assert slope < MAX_SLOPE_MB, f"RSS grows {slope:.3f} MB per round: {rss}"
