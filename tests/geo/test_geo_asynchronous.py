"""FedBuff and FedAsync driven by the simulated clock, end to end (in-process engine).

Four regions on three continents, the server in Frankfurt: Germany's replies
arrive first, Brazil's and Japan's last, so a step of K = 2 arrivals leaves the
far regions in flight and their updates arrive stale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedglobal
from fedglobal.errors import ConfigError

pytestmark = pytest.mark.slow

REGIONS = ["Germany", "Japan", "Brazil", "Kenya"]


def _experiment(folder, rounds: int, strategy: dict, **experiment) -> dict:
    data = folder / "rows.csv"
    if not data.exists():
        rng = np.random.default_rng(0)
        n = 400
        table = pd.DataFrame(
            {
                "region": rng.choice(REGIONS, n, p=[0.1, 0.2, 0.3, 0.4]),
                "x1": rng.normal(size=n),
                "x2": rng.normal(size=n),
            }
        )
        table["y"] = 2 * table.x1 - table.x2 + rng.normal(scale=0.1, size=n)
        table.to_csv(data, index=False)
    return {
        "experiment": {"name": "async", "seed": 3, "rounds": rounds, **experiment},
        "data": {"source": f"csv:{data}", "region": "region", "target": "y"},
        "model": {"hidden": [8]},
        "client": {"batch_size": 16, "learning_rate": 0.01},
        "strategy": strategy,
        "server": {"checkpoint_every": 1},
        "output": {"plots": False, "tensorboard": False},
        "geo": {"resolve": "names", "server": "Frankfurt"},
    }


FEDBUFF = {"name": "fedbuff", "buffer_size": 2, "server_learning_rate": 1.0}


@pytest.fixture(scope="module")
def fedbuff_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fedbuff")
    return [
        fedglobal.simulate(
            _experiment(folder, 5, FEDBUFF), output_dir=folder / f"run{i}", quiet=True
        )
        for i in range(2)
    ]


def test_each_step_aggregates_k_arrivals_in_clock_order(fedbuff_runs):
    result = fedbuff_runs[0]
    times, rounds, history = result.sim_times, result.rounds, result.history
    steps = rounds[rounds["round"] > 0]
    assert len(steps) == 5 and (times.kept == 1).all()
    assert len(times) == 2 * 5  # two arrivals per step, one row each
    arrivals = sorted(
        times["arrived_s"] + rounds.set_index("round").sim_start_s[times["round"]].to_numpy()
    )
    # the k-th step ends at the (2k)-th arrival; steps follow each other
    np.testing.assert_allclose(steps.sim_end_s.to_numpy(), arrivals[1::2], atol=2e-6)
    np.testing.assert_allclose(steps.sim_start_s.to_numpy()[1:], steps.sim_end_s.to_numpy()[:-1])
    train = history[(history.split == "train") & (history.region == "all")]
    mean = train[train.metric == "staleness_mean"].set_index("round").value
    top = train[train.metric == "staleness_max"].set_index("round").value
    assert list(mean.index) == [1, 2, 3, 4, 5] and mean.iloc[0] == 0.0
    assert top.max() >= 1.0  # the far regions' updates arrived stale
    per_region = history[(history.metric == "staleness") & (history.region != "all")]
    assert len(per_region) == 2 * 5
    # a stale reply is recorded under the step that aggregated it
    for step, rows in per_region.groupby("round"):
        assert rows.value.max() == top[step] and rows.value.mean() == pytest.approx(mean[step])
    # the regions that trained together trained as one cohort: no fallback
    assert set(steps.trained_by) == {"cohort"} and steps.fallback_reason.isna().all()


def test_the_run_folder_keeps_its_schema(fedbuff_runs):
    from fedglobal.run.results import check_run

    assert check_run(fedbuff_runs[0].run_dir) == []


def test_same_seed_same_history_and_clock(fedbuff_runs):
    first, second = fedbuff_runs
    pd.testing.assert_frame_equal(first.history, second.history)
    pd.testing.assert_frame_equal(first.sim_times, second.sim_times)
    columns = ["round", "sim_start_s", "sim_end_s"]
    pd.testing.assert_frame_equal(first.rounds[columns], second.rounds[columns])


FEDASYNC = {"name": "fedasync", "alpha": 0.6, "staleness": "polynomial"}


@pytest.mark.parametrize("strategy", [FEDBUFF, FEDASYNC], ids=["fedbuff", "fedasync"])
def test_a_resumed_run_continues_bit_for_bit(tmp_path, strategy):
    """The checkpoint after step 2 has replies in flight; resuming reproduces the straight run."""
    straight = fedglobal.simulate(
        _experiment(tmp_path, 5, strategy), output_dir=tmp_path / "straight", quiet=True
    )
    first = fedglobal.simulate(
        _experiment(tmp_path, 2, strategy), output_dir=tmp_path / "run", quiet=True
    )
    resumed = fedglobal.simulate(
        _experiment(tmp_path, 2, strategy),
        overrides=["experiment.rounds=5"],
        resume=first.run_dir,
        quiet=True,
    )
    assert resumed.summary["resumed_from"]["round"] == 2
    pd.testing.assert_frame_equal(resumed.history, straight.history)
    pd.testing.assert_frame_equal(resumed.sim_times, straight.sim_times)
    a = np.load(straight.run_dir / "checkpoint.npz")
    b = np.load(resumed.run_dir / "checkpoint.npz")
    assert sorted(a.files) == sorted(b.files)
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


def test_fedasync_steps_every_arrival(tmp_path):
    strategy = {"name": "fedasync", "alpha": 0.6, "staleness": "hinge", "staleness_b": 1}
    result = fedglobal.simulate(_experiment(tmp_path, 4, strategy), quiet=True, output_dir=tmp_path)
    assert len(result.sim_times) == 4 and (result.sim_times.kept == 1).all()
    staleness = result.history[result.history.metric == "staleness"]
    assert len(staleness) == 4
    # step 1 sends every region its model, trained as one cohort; later steps send one
    # region, which [client] cohort = "auto" trains with Keras fit by design
    steps = result.rounds[result.rounds["round"] > 0]
    assert steps.trained_by.iloc[0] == "cohort"
    assert set(steps.fallback_reason.dropna()) <= {
        "a cohort of one region (client.cohort = 'auto')"
    }


def test_fedbuff_with_k_all_regions_is_fedavg_end_to_end(tmp_path):
    fedbuff = {"name": "fedbuff", "buffer_size": 4, "server_learning_rate": 1.0}
    a = fedglobal.simulate(_experiment(tmp_path, 2, fedbuff), quiet=True, output_dir=tmp_path / "a")
    b = fedglobal.simulate(
        _experiment(tmp_path, 2, {"name": "fedavg", "min_train_clients": 4}),
        quiet=True,
        output_dir=tmp_path / "b",
    )
    test = ["round", "region", "metric"]
    mine = a.history[a.history.split == "test"].set_index(test).value
    theirs = b.history[b.history.split == "test"].set_index(test).value
    pd.testing.assert_series_equal(mine, theirs, rtol=1e-5)
    assert (a.history[a.history.metric == "staleness"].value == 0).all()
    pd.testing.assert_frame_equal(
        a.rounds[["round", "sim_start_s", "sim_end_s"]],
        b.rounds[["round", "sim_start_s", "sim_end_s"]],
    )


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"geo": None}, "is asynchronous: it needs \\[geo\\]"),
        ({"engine": "ray"}, "experiment.engine = 'ray' is not supported"),
        ({"policy": "deadline"}, "geo.policy = 'deadline' is for synchronous rounds"),
    ],
)
def test_where_it_cannot_run_it_is_refused_in_one_line(tmp_path, change, match):
    raw = _experiment(tmp_path, 1, FEDBUFF)
    if "geo" in change:
        del raw["geo"]
    if "engine" in change:
        raw["experiment"]["engine"] = change["engine"]
    if "policy" in change:
        raw["geo"].update(policy="deadline", deadline_s=10.0)
    with pytest.raises(ConfigError, match=match) as caught:
        fedglobal.simulate(raw, quiet=True, output_dir=tmp_path / "runs")
    assert "\n" not in str(caught.value)
