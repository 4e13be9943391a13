"""HierFAVG end to end (in-process engine): groups, their clock, wide-area bytes, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedglobal
from fedglobal.errors import ConfigError

pytestmark = pytest.mark.slow

REGIONS = ["Germany", "France", "Japan", "China", "Brazil", "Peru"]
ZONES = {"Germany": "north", "France": "north", "Japan": "north"}  # the rest: south


def _experiment(folder, rounds: int, strategy: dict, regions=REGIONS, geo=True) -> dict:
    data = folder / f"rows-{len(regions)}.csv"
    if not data.exists():
        rng = np.random.default_rng(1)
        n = 60 * len(regions)
        table = pd.DataFrame(
            {"region": rng.choice(regions, n), "x1": rng.normal(size=n), "x2": rng.normal(size=n)}
        )
        table["zone"] = table.region.map(ZONES).fillna("south")
        table["y"] = 2 * table.x1 - table.x2 + rng.normal(scale=0.1, size=n)
        table.to_csv(data, index=False)
    raw = {
        "experiment": {"name": "hier", "seed": 5, "rounds": rounds},
        "data": {
            "source": f"csv:{data}",
            "region": "region",
            "target": "y",
            "features": ["x1", "x2", "zone"],
        },
        "model": {"hidden": [8]},
        "client": {"batch_size": 16, "learning_rate": 0.01},
        "strategy": {"min_train_clients": 2, **strategy},
        "server": {"checkpoint_every": 1},
        "output": {"plots": False, "tensorboard": False},
    }
    if geo:
        raw["geo"] = {"resolve": "names", "server": "Frankfurt"}
    return raw


HIER = {"name": "hierfavg", "cloud_every": 2}


@pytest.fixture(scope="module")
def hier_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hier")
    return [
        fedglobal.simulate(_experiment(folder, 4, HIER), output_dir=folder / f"r{i}", quiet=True)
        for i in range(2)
    ]


def test_groups_by_continent_and_the_wide_area_bytes(hier_runs):
    summary = hier_runs[0].summary
    hierarchy = summary["hierarchy"]
    assert hierarchy["groups"] == {
        "America": ["Brazil", "Peru"],
        "Asia": ["China", "Japan"],
        "Europe": ["France", "Germany"],
    }
    # 6 regions: flat FedAvg sends 6 models and gets 6 back each of 4 rounds; the 3 group
    # servers send theirs up and get the cloud's back in the 2 cloud rounds
    assert hierarchy["wan_bytes_ratio"] == pytest.approx((2 * 3 * 2) / (4 * 12))
    assert set(hierarchy["group_servers"]) == {"America", "Asia", "Europe"}


def test_cloud_rounds_add_the_wide_area_exchange(hier_runs):
    result = hier_runs[0]
    rounds = result.rounds.set_index("round")
    times = result.sim_times
    length = rounds.sim_end_s - rounds.sim_start_s
    last_arrival = times.groupby("round").arrived_s.max()
    for r in (1, 3):  # group rounds end with the last region's reply at its group server
        assert length[r] == pytest.approx(last_arrival[r], abs=2e-6)
    for r in (2, 4):  # cloud rounds: then up to Frankfurt and back, from Asia and America
        assert length[r] > last_arrival[r] + 0.1
    # the global (cloud) model changes on cloud rounds only
    r2 = result.metric("r2")
    assert r2[1] == r2[0] and r2[3] == r2[2] and r2[2] != r2[1]


def test_the_run_folder_keeps_its_schema(hier_runs):
    from fedglobal.run.results import check_run

    assert check_run(hier_runs[0].run_dir) == []


def test_each_group_trains_from_its_own_model_in_one_cohort(hier_runs, tmp_path):
    """Cohort training takes the regions of every group together, each from its own
    group's model: the same history as Keras fit region by region."""
    rounds = hier_runs[0].rounds
    assert set(rounds[rounds["round"] > 0].trained_by) == {"cohort"}
    raw = _experiment(tmp_path, 4, HIER)
    raw["client"]["cohort"] = False
    one_by_one = fedglobal.simulate(raw, output_dir=tmp_path, quiet=True)
    mine, theirs = (
        r.history[r.history.split == "test"].set_index(["round", "region", "metric"]).value
        for r in (hier_runs[0], one_by_one)
    )
    pd.testing.assert_series_equal(mine, theirs, rtol=1e-4, atol=1e-5)


def test_same_seed_same_history_and_clock(hier_runs):
    first, second = hier_runs
    pd.testing.assert_frame_equal(first.history, second.history)
    pd.testing.assert_frame_equal(first.sim_times, second.sim_times)
    assert first.summary["hierarchy"] == second.summary["hierarchy"]


def test_a_resumed_run_continues_bit_for_bit(tmp_path):
    straight = fedglobal.simulate(
        _experiment(tmp_path, 4, HIER), output_dir=tmp_path / "s", quiet=True
    )
    first = fedglobal.simulate(
        _experiment(tmp_path, 1, HIER), output_dir=tmp_path / "f", quiet=True
    )
    resumed = fedglobal.simulate(
        _experiment(tmp_path, 1, HIER),
        overrides=["experiment.rounds=4"],
        resume=first.run_dir,
        quiet=True,
    )
    assert resumed.summary["resumed_from"]["round"] == 1
    pd.testing.assert_frame_equal(resumed.history, straight.history)
    pd.testing.assert_frame_equal(resumed.sim_times, straight.sim_times)
    assert resumed.summary["hierarchy"] == straight.summary["hierarchy"]
    a = np.load(straight.run_dir / "checkpoint.npz")
    b = np.load(resumed.run_dir / "checkpoint.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


def test_one_group_cloud_every_round_is_fedavg(tmp_path):
    europe = ["Germany", "France", "Italy", "Spain"]
    one = {"name": "hierfavg", "cloud_every": 1}
    hier = fedglobal.simulate(
        _experiment(tmp_path, 2, one, europe, geo=False), output_dir=tmp_path / "h", quiet=True
    )
    flat = fedglobal.simulate(
        _experiment(tmp_path, 2, {"name": "fedavg"}, europe, geo=False),
        output_dir=tmp_path / "f",
        quiet=True,
    )
    assert hier.summary["hierarchy"]["groups"] == {"Europe": sorted(europe)}
    pd.testing.assert_frame_equal(hier.history, flat.history)


def test_group_by_a_data_column(tmp_path):
    strategy = {"name": "hierfavg", "cloud_every": 1, "group_by": "column:zone"}
    result = fedglobal.simulate(
        _experiment(tmp_path, 1, strategy, geo=False), output_dir=tmp_path, quiet=True
    )
    assert result.summary["hierarchy"]["groups"] == {
        "north": ["France", "Germany", "Japan"],
        "south": ["Brazil", "China", "Peru"],
    }


def test_overcommit_is_refused_in_one_line(tmp_path):
    raw = _experiment(tmp_path, 1, HIER)
    raw["geo"]["policy"] = "overcommit"
    with pytest.raises(ConfigError, match="is hierarchical: geo.policy = 'overcommit'"):
        fedglobal.simulate(raw, output_dir=tmp_path / "runs", quiet=True)
