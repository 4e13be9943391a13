"""Local-only and centralised baselines: same data, model, start and budget as the federation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedglobal.benchmark import parse_suite, run_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def with_baselines(tmp_path_factory, tiny_template):
    import tomli_w

    raw = dict(tiny_template)
    raw["suite"] = {**raw["suite"], "seeds": [0]}
    raw["strategies"] = [
        {"label": "FedAvg", "name": "fedavg"},
        {"label": "alone", "baseline": "local"},
        {"label": "pooled", "baseline": "centralised"},
    ]
    folder = tmp_path_factory.mktemp("bench")
    path = folder / "tiny.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return run_benchmark(path, output_dir=folder / "runs", quiet=True)


def _history(result, label: str) -> pd.DataFrame:
    cell = next(c for c in result.cells if c.cell.strategy.label == label)
    assert cell.ok, cell.error
    return pd.read_csv(cell.run_dir / "history.csv", dtype={"region": str})


def test_baselines_run_and_are_labelled(with_baselines):
    summary = with_baselines.summary.set_index("strategy")
    assert summary.loc["alone", "kind"] == "local-only"
    assert summary.loc["pooled", "kind"] == "centralised"
    assert (summary.status == "ok").all()
    assert summary.loc["alone", "bytes_per_round"] == 0
    assert np.isnan(summary.loc["pooled", "bytes_per_round"])
    md = (with_baselines.out_dir / "summary.md").read_text()
    assert "alone *(baseline: each region alone)*" in md
    assert "pooled *(reference: pooled data)*" in md


def test_same_start_same_regions_same_test_rows(with_baselines):
    """Round 0 is the same initial model on the same test splits for all three."""
    fed = _history(with_baselines, "FedAvg")
    for label in ("alone", "pooled"):
        base = _history(with_baselines, label)
        assert sorted(base.region.unique()) == sorted(fed.region.unique())
        a = fed[(fed["round"] == 0) & (fed.split == "test")].sort_values(["region", "metric"])
        b = base[(base["round"] == 0) & (base.split == "test")].sort_values(["region", "metric"])
        np.testing.assert_allclose(a.value.to_numpy(), b.value.to_numpy(), rtol=1e-5)


def test_same_budget(with_baselines):
    """Local-only: every region trains every round; centralised: steps x clients per round."""
    alone = _history(with_baselines, "alone")
    rounds = sorted(alone[alone.split == "train"]["round"].unique())
    assert rounds == [1, 2]
    per_round = alone[(alone.split == "train") & (alone.region != "all")].groupby("round").size()
    assert (per_round == 4).all()  # 4 regions, each alone
    pooled = next(c for c in with_baselines.cells if c.cell.strategy.label == "pooled")
    assert pooled.run_dir is not None
    import json

    summary = json.loads((pooled.run_dir / "summary.json").read_text())
    assert summary["steps_per_round"] == 2 * 4  # steps x the 4 clients FedAvg trains per round
    assert summary["baseline"] == "centralised"


def test_baselines_learn(with_baselines):
    results = with_baselines.results
    for label in ("alone", "pooled"):
        rows = results[results.strategy == label].set_index("round")
        assert rows.loc[2, "test_loss"] < rows.loc[0, "test_loss"], label


def test_baseline_rejects_nothing_from_the_suite_strategy(tiny_template):
    """A baseline cell keeps only the FedAvg parameters of [base.strategy]."""
    raw = dict(tiny_template)
    raw["base"] = {**raw["base"], "strategy": {"min_train_clients": 2, "proximal_mu": 0.5}}
    raw["strategies"] = [{"label": "alone", "baseline": "local"}]
    suite = parse_suite(raw, path="/x/tiny.toml")
    strategy = suite.experiment(suite.cells()[0])["strategy"]
    assert strategy == {"name": "fedavg", "min_train_clients": 2}
