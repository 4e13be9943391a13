"""Strategies whose regions keep state between rounds (SCAFFOLD's control variates, Ditto's
personal models) give the same run on Flower's Simulation Engine (``ray``) as in process:
the state lives in each node's ``context.state``, which Flower keeps per node."""

from __future__ import annotations

import pandas as pd
import pytest

import fedglobal
from tests.strategies.helpers import write_three_regions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return write_three_regions(tmp_path_factory.mktemp("state") / "rows.csv")


@pytest.mark.parametrize("strategy", ["scaffold", "ditto"])
def test_ray_engine_run_equals_the_inprocess_run(csv, tmp_path, strategy):
    raw = {
        "experiment": {"rounds": 3, "output_dir": str(tmp_path), "name": strategy, "seed": 5},
        "data": {"source": f"csv:{csv}", "region": "r", "target": "y", "min_region_rows": 2},
        "model": {"name": "mlp", "hidden": [4]},
        # Flower's engine sends one message at a time: compare with Keras fit in process
        "client": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 8, "cohort": False},
        "strategy": {"name": strategy, "min_available_clients": 3, "min_train_clients": 3},
        "output": {"tensorboard": False, "plots": False},
    }
    inprocess = fedglobal.simulate(raw, quiet=True).history
    ray = fedglobal.simulate(raw, engine="ray", quiet=True).history
    assert len(inprocess) == len(ray) and inprocess["round"].max() == 3
    pd.testing.assert_frame_equal(ray, inprocess, check_exact=True)
