"""[geo] end to end on gapminder (in-process engine, real Keras and Flower)."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pandas as pd
import pytest

import fedglobal
from fedglobal.errors import ConfigError

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.toml"

pytestmark = pytest.mark.slow


def _raw(quickstart_path, out, **geo) -> dict:
    raw = tomllib.loads(quickstart_path.read_text())
    raw["experiment"].update(rounds=2, output_dir=str(out))
    raw["strategy"]["fraction_train"] = 0.5
    raw["geo"] = {"resolve": "names", "server": "Frankfurt", **geo}
    return raw


@pytest.fixture(scope="module")
def overcommit_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    geo = {"policy": "overcommit", "overcommit": 1.3, "target": "r2 >= 0.3"}
    return [fedglobal.simulate(_raw(QUICKSTART, out, **geo), quiet=True) for _ in range(2)]


def test_the_run_folder_has_the_clock(overcommit_runs):
    run_dir = overcommit_runs[0].run_dir
    rounds = pd.read_csv(run_dir / "rounds.csv")
    times = pd.read_csv(run_dir / "sim_times.csv")
    assert {"sim_start_s", "sim_end_s"} <= set(rounds.columns)
    assert list(times.columns[:7]) == [
        "round", "region", "download_s", "compute_s", "upload_s", "arrived_s", "kept",
    ]  # fmt: skip
    for server_round in (1, 2):
        sent = times[times["round"] == server_round]
        assert len(sent) == math.ceil(1.3 * 11)  # 22 regions x 0.5, overcommitted
        assert sent.kept.sum() == 11
        row = rounds[rounds["round"] == server_round].iloc[0]
        eleventh = sorted(sent.arrived_s)[10]
        assert row.sim_end_s - row.sim_start_s == pytest.approx(eleventh, abs=1e-5)
        assert (sent[sent.kept == 1].arrived_s <= eleventh + 1e-9).all()
        assert (sent.download_s + sent.compute_s + sent.upload_s).to_numpy() == pytest.approx(
            sent.arrived_s.to_numpy()
        )
    assert rounds.sim_start_s.iloc[2] == pytest.approx(rounds.sim_end_s.iloc[1])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["sim_total_s"] == pytest.approx(rounds.sim_end_s.iloc[-1], abs=1e-5)
    r2 = overcommit_runs[0].metric("r2")
    first = min(r for r, v in r2.items() if r > 0 and v >= 0.3)
    expected = rounds.set_index("round").sim_end_s[first]
    assert summary["sim_time_to_target_s"] == pytest.approx(expected, abs=1e-5)
    assert summary["geo"]["policy"] == "overcommit"
    assert set(summary["geo"]["places"]) == set(times.region) | set(summary["geo"]["places"])
    assert len(summary["geo"]["places"]) == 22
    for plot in ("plots/regions_map.png", "plots/r2_sim_hours.png"):
        assert (run_dir / plot).is_file() and plot in summary["plots"]


def test_the_run_folder_keeps_its_schema(overcommit_runs):
    from fedglobal.run.results import check_run

    result = overcommit_runs[0]
    assert check_run(result.run_dir) == []
    assert len(result.sim_times) == 2 * math.ceil(1.3 * 11)


def test_same_seed_same_clock(overcommit_runs):
    first, second = (r.run_dir for r in overcommit_runs)
    pd.testing.assert_frame_equal(
        pd.read_csv(first / "sim_times.csv"), pd.read_csv(second / "sim_times.csv")
    )
    columns = ["round", "sim_start_s", "sim_end_s"]
    pd.testing.assert_frame_equal(
        pd.read_csv(first / "rounds.csv")[columns], pd.read_csv(second / "rounds.csv")[columns]
    )


def test_a_region_without_coordinates_is_one_clear_line(quickstart_path, tmp_path):
    raw = _raw(quickstart_path, tmp_path)
    raw["geo"] = {"resolve": "none", "server": [50.1, 8.7],
                  "regions": {"Caribbean": {"lat": 18.0, "lon": -70.0}}}  # fmt: skip
    raw["experiment"]["rounds"] = 1
    with pytest.raises(ConfigError) as info:
        fedglobal.simulate(raw, quiet=True)
    message = str(info.value)
    assert "no coordinates for region(s)" in message and "'Western Europe'" in message
    assert "'Caribbean'" not in message.split("no coordinates")[1].split(":")[0]


def test_the_report_shows_the_map_and_simulated_hours(overcommit_runs):
    from fedglobal.geo.outputs import run_geo_figures
    from fedglobal.run.report import render_report

    result = overcommit_runs[0]
    figures = run_geo_figures(result.run_dir, result.history, "r2")
    assert sorted(figures) == ["r2_sim_hours.png", "regions_map.png"]
    titles = [ax.get_title() for fig in figures.values() for ax in fig.axes if ax.get_title()]
    assert "share of round time spent waiting" in titles
    html = render_report([fedglobal.load_run(result.run_dir)])
    assert 'alt="final test r2"' in html  # the regions map
    assert 'alt="r2 against simulated time"' in html
