"""The ``ray`` engine: Flower's Simulation Engine started and stopped by fedglobal."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

import fedglobal
from tests.engines.engine_helpers import REGIONS

pytestmark = pytest.mark.slow


def test_ray_engine_runs_the_documented_command_for_two_rounds(ray_run):
    result = ray_run["result"]
    assert result.summary["engine"] == "ray"
    assert list(result.metric("r2").index) == [0, 1, 2]
    assert set(result.history.region) - {"all"} == set(REGIONS)
    for name in ("config.toml", "history.csv", "summary.json", "model.keras", "checkpoint.npz"):
        assert (result.run_dir / name).is_file(), name
    assert "round 2/2" in ray_run["proc"].stderr  # progress streamed from the ServerApp
    placement = result.summary["placement"]  # a private Ray: one node trained every region
    assert set(placement) == set(REGIONS)
    assert len({p["ray_node_id"] for p in placement.values()}) == 1
    assert all(p["node"].startswith("ray ") for p in placement.values())
    assert "run folder:" in ray_run["proc"].stdout


def test_ray_engine_leaves_the_users_flower_home_and_pyproject_alone(ray_run):
    assert ".flwr" not in ray_run["home_after"]
    assert ray_run["pyproject_unchanged"]


def test_ray_and_inprocess_give_identical_weights_after_round_one(tiny, tmp_path):
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=1, output_dir=str(tmp_path))
    # 2 of the 3 regions train: Ray numbers its nodes at random, the in-process
    # engine by region, and the same seed must still sample the same regions
    raw["strategy"]["fraction_train"] = 0.67
    cohort = fedglobal.simulate(raw, engine="inprocess", quiet=True)  # the default: cohorts
    # Ray's ClientApp trains with Keras fit, region by region: bitwise equal to the
    # in-process engine on the same path, to float rounding to its cohorts.
    raw["client"] = {**raw["client"], "cohort": False}
    inprocess = fedglobal.simulate(raw, engine="inprocess", quiet=True)
    ray = fedglobal.simulate(raw, engine="ray", quiet=True)
    a = np.load(inprocess.run_dir / "checkpoint.npz")
    b = np.load(ray.run_dir / "checkpoint.npz")
    c = np.load(cohort.run_dir / "checkpoint.npz")
    assert int(a["__round__"]) == int(b["__round__"]) == 1
    assert sorted(a.files) == sorted(b.files) == sorted(c.files)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)  # bitwise
        np.testing.assert_allclose(c[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
    pd.testing.assert_frame_equal(inprocess.history, ray.history)
    pd.testing.assert_frame_equal(cohort.history, ray.history, rtol=1e-5)
