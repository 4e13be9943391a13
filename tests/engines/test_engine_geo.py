"""The simulated clock ([geo]) is the same on the in-process and the Ray engine."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

import fedglobal
from fedglobal.run.results import load_run
from tests.engines.engine_helpers import run_cli, write_experiment

pytestmark = pytest.mark.slow

GEO = {
    "server": [50.1, 8.7],
    "policy": "overcommit",
    "overcommit": 1.3,
    "regions": {
        "africa": {"lat": -1.3, "lon": 36.8, "compute": 0.001},
        "asia": {"lat": 1.35, "lon": 103.8, "uplink_mbps": 5.0},
        "europe": {"lat": 52.5, "lon": 13.4},
    },
}


def test_the_clock_is_identical_in_process_and_on_ray(tiny, tmp_path):
    raw = copy.deepcopy(tiny["raw"])
    raw["geo"] = GEO
    raw["strategy"]["fraction_train"] = 0.5  # 2 of 3 sampled, 1 more overcommitted
    toml = write_experiment(tmp_path / "geo.toml", raw)  # one file: the same base-dir
    inprocess = fedglobal.simulate(str(toml), output_dir=tmp_path / "inprocess", quiet=True)

    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "ray"
    proc = run_cli(
        "simulate", str(toml), "--engine", "ray", "--output-dir", str(out), env={"HOME": str(home)}
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (run_dir,) = list(out.iterdir())
    ray = load_run(run_dir)
    assert ray.summary["engine"] == "ray"

    times = inprocess.sim_times
    assert len(times) == 2 * 3 and times.kept.sum() == 2 * 2  # 3 sent, first 2 kept, 2 rounds
    # The messages are the same on both engines (the engine's name and the output folder
    # are not sent), so the clock is identical to the last bit.
    pd.testing.assert_frame_equal(times, ray.sim_times, check_exact=True)
    pd.testing.assert_frame_equal(inprocess.rounds[["bytes_sent"]], ray.rounds[["bytes_sent"]])
    columns = ["round", "sim_start_s", "sim_end_s"]
    pd.testing.assert_frame_equal(inprocess.rounds[columns], ray.rounds[columns])
    for key in ("sim_total_s", "sim_time_to_target_s"):
        assert inprocess.summary[key] == ray.summary[key]


def test_fedbuff_steps_the_same_on_the_cluster_engine(tiny, tmp_path):
    """The asynchronous driver sits above the Grid: a Ray cluster gives the same clock."""
    raw = copy.deepcopy(tiny["raw"])
    raw["geo"] = {k: v for k, v in GEO.items() if k not in ("policy", "overcommit")}
    raw["strategy"] = {"name": "fedbuff", "buffer_size": 2}
    runs = {}
    for engine in ("inprocess", "cluster"):
        raw["experiment"]["engine"] = engine
        runs[engine] = fedglobal.simulate(
            copy.deepcopy(raw), output_dir=tmp_path / engine, quiet=True
        )
    inprocess, cluster = runs["inprocess"], runs["cluster"]
    assert cluster.summary["engine"] == "cluster"
    assert len(inprocess.sim_times) == 2 * 2  # two arrivals a step
    pd.testing.assert_frame_equal(inprocess.sim_times, cluster.sim_times, check_exact=True)
    columns = ["round", "sim_start_s", "sim_end_s"]
    pd.testing.assert_frame_equal(inprocess.rounds[columns], cluster.rounds[columns])
    staleness = [r.history[r.history.metric == "staleness"] for r in (inprocess, cluster)]
    pd.testing.assert_frame_equal(staleness[0], staleness[1])
