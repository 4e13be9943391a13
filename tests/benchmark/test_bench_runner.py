"""The benchmark runner end to end on a tiny real grid (no mocks): files, rows, failures."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from fedglobal.benchmark import load_suite, run_benchmark
from fedglobal.benchmark.summary import SUMMARY_COLUMNS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_template):
    """2 strategies x 1 data setting x 2 seeds, 2 rounds, plus one unregistered strategy."""
    import tomli_w

    raw = dict(tiny_template)
    raw["strategies"] = [*raw["strategies"], {"label": "Nope", "name": "fedmagic"}]
    # a learning rate no other test uses: this grid's compiled models are its own
    raw["base"]["client"] = {**raw["base"]["client"], "learning_rate": 0.0625}
    folder = tmp_path_factory.mktemp("bench")
    path = folder / "tiny.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    from clients import models

    before = set(models._CACHE)
    result = run_benchmark(path, output_dir=folder / "runs", quiet=True)
    result.compiled_models_built = len(set(models._CACHE) - before)
    return result


def test_writes_every_file(tiny_run):
    out = tiny_run.out_dir
    assert out.name == "bench-tiny"
    for name in ("results.csv", "summary.csv", "summary.md", "suite.toml", "run.json"):
        assert (out / name).is_file(), name
    for name in ("curves.png", "loss.png", "regions.png"):
        path = out / "plots" / name
        assert path.is_file() and path.stat().st_size > 5000, name
    assert len(list((out / "cells").iterdir())) == 4  # the failed cell leaves no run folder


def test_results_have_one_complete_row_per_run_and_round(tiny_run):
    results = pd.read_csv(tiny_run.out_dir / "results.csv")
    ok = results[results.status == "ok"]
    assert len(ok) == 2 * 2 * 3  # strategies x seeds x rounds 0..2
    assert set(ok.strategy) == {"FedAvg", "FedProx μ=1"}
    assert set(ok.seed) == {0, 1}
    assert sorted(ok["round"].unique()) == [0, 1, 2]
    for column in ("value", "test_loss", "region_worst", "region_mean", "test_accuracy"):
        assert ok[column].notna().all(), column
    assert (ok.bytes_per_round > 0).all()  # round 0 evaluates: its messages count too
    assert ok[ok["round"] > 0].train_loss.notna().all()
    assert (ok.region_worst <= ok.region_mean + 1e-12).all()
    assert (ok.value == ok.test_accuracy).all()


def test_same_seed_same_start_for_every_strategy(tiny_run):
    """Fairness: round 0 (the initial model on the same data) is identical across strategies."""
    results = tiny_run.results
    start = results[(results.status == "ok") & (results["round"] == 0)]
    for _, rows in start.groupby("seed"):
        assert rows.value.nunique() == 1 and rows.test_loss.nunique() == 1


def test_a_failing_cell_is_a_row_not_a_crash(tiny_run):
    results = tiny_run.results
    failed = results[results.status == "failed"]
    assert set(failed.strategy) == {"Nope"} and len(failed) == 2  # one row per seed
    assert failed.error.str.contains("fedmagic").all()
    assert len(tiny_run.failed) == 2
    summary = tiny_run.summary
    row = summary[summary.strategy == "Nope"].iloc[0]
    assert row.status == "failed" and row.runs_ok == 0 and "fedmagic" in row.error
    md = (tiny_run.out_dir / "summary.md").read_text()
    assert "**failed**" in md and "fedmagic" in md


def test_summary_table_is_complete(tiny_run):
    summary = pd.read_csv(tiny_run.out_dir / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    ok = summary[summary.status == "ok"].set_index("strategy")
    assert set(ok.index) == {"FedAvg", "FedProx μ=1"}
    for strategy, row in ok.iterrows():
        assert row.runs_ok == row.runs == 2, strategy
        for column in (
            "final_mean",
            "final_std",
            "best_mean",
            "final_loss_mean",
            "worst_region_mean",
            "mean_region_mean",
            "bytes_per_round",
            "wall_time_s",
        ):
            assert math.isfinite(row[column]), (strategy, column)
        assert row.best_mean >= row.final_mean - 1e-12
    # the summary agrees with results.csv
    results = tiny_run.results
    last = results[(results.strategy == "FedAvg") & (results["round"] == 2)]
    assert ok.loc["FedAvg", "final_mean"] == pytest.approx(last.value.mean())
    md = (tiny_run.out_dir / "summary.md").read_text()
    assert "| FedAvg |" in md and "±" in md


def test_bytes_per_round_measured_and_model_size_times_messages(tiny_run):
    """The wire count (rounds.csv) and the computed figure (model size x messages) agree."""
    import numpy as np

    from fedglobal.benchmark.runner import _bytes_per_round
    from fedglobal.protocol import to_record

    cell = next(c for c in tiny_run.cells if c.ok and c.cell.strategy.label == "FedAvg")
    with np.load(cell.run_dir / "checkpoint.npz") as ckpt:
        weights = {k: ckpt[k] for k in ckpt.files if not k.startswith("__")}
    model_bytes = to_record(weights).count_bytes()
    # 4 regions, fraction_train 1.0: 4 train messages, 4 replies, 4 evaluate messages
    computed = _bytes_per_round(_cfg(cell), cell.run_dir, 4)
    assert computed == model_bytes * (4 + 4 + 4)
    rounds = pd.read_csv(cell.run_dir / "rounds.csv").set_index("round")
    arrays = rounds.array_bytes_sent + rounds.array_bytes_received
    assert (arrays.loc[1:] == computed).all()
    total = (rounds.bytes_sent + rounds.bytes_received).loc[1:]
    assert cell.bytes_per_round == pytest.approx(total.mean())
    assert (cell.rows.bytes_source == "measured").all()


def _cfg(cell):
    from fedglobal import load_config

    return load_config(cell.run_dir / "config.toml")


def test_seeds_and_only_filters(tmp_path, tiny_suite, write_suite):
    tiny_suite["base"]["experiment"]["rounds"] = 1
    path = write_suite(tiny_suite)
    result = run_benchmark(
        path, seeds=[3], only=["strategy=fedprox*"], output_dir=tmp_path / "runs", quiet=True
    )
    assert [(c.cell.strategy.label, c.cell.seed) for c in result.cells] == [("FedProx μ=1", 3)]
    assert result.cells[0].ok


def test_suite_cells_share_the_budget(tiny_suite, write_suite):
    suite = load_suite(write_suite(tiny_suite))
    configs = [suite.experiment(c) for c in suite.cells()]
    for raw in configs:
        assert raw["experiment"]["rounds"] == 2 and raw["client"]["steps"] == 2
        assert raw["strategy"]["min_train_clients"] == 2
    assert {raw["strategy"]["name"] for raw in configs} == {"fedavg", "fedprox"}


def test_parallel_workers_give_the_same_results(tmp_path, tiny_suite, write_suite):
    """--jobs 2: the same rows as in one process (every random choice derives from the seed)."""
    tiny_suite["base"]["experiment"]["rounds"] = 1
    path = write_suite(tiny_suite)
    serial = run_benchmark(path, output_dir=tmp_path / "a", quiet=True, plots=False)
    parallel = run_benchmark(path, output_dir=tmp_path / "b", quiet=True, plots=False, jobs=2)
    assert [c.cell.key for c in parallel.cells] == [c.cell.key for c in serial.cells]
    columns = ["strategy", "seed", "round", "value", "test_loss", "region_worst"]
    pd.testing.assert_frame_equal(parallel.results[columns], serial.results[columns])


def test_cells_reuse_the_compiled_model(tiny_run):
    """One compiled Keras model per seed (the schema differs by seed), shared by strategies."""
    assert tiny_run.compiled_models_built == 2
