"""experiments/benchmarks/peers.py without its peers: the export that makes the systems'
workloads identical, the cohorts, the process-tree measurement and the results table.

Nothing here installs or imports pfl-research or starts Flower (no network, seconds)."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location(
        "peers_bench", ROOT / "experiments" / "benchmarks" / "peers.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers_bench"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


# W1's data and model, small: 8 devices, 3 rounds of 3, one local step.
SMALL = {
    "experiment": {"name": "peers-small", "seed": 3, "rounds": 3},
    "data": {
        "source": "synthetic:fedprox",
        "task": "classification",
        "num_regions": 8,
        "test_fraction": 0.2,
        "synthetic_alpha": 0.5,
        "synthetic_beta": 0.5,
    },
    "model": {"name": "logistic"},
    "client": {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 10, "steps": 1},
    "strategy": {"name": "fedavg", "fraction_train": 0.3333, "min_train_clients": 3},
    "output": {"plots": False, "tensorboard": False},
}


@pytest.fixture(scope="module")
def exported(peers, tmp_path_factory):
    folder = tmp_path_factory.mktemp("peers")
    toml = peers.experiment_config(SMALL, folder, "small")
    meta = peers.export(toml, folder / "small.npz")
    return toml, folder / "small.npz", meta


def test_export_holds_fedglobal_rows_standardised_and_its_initial_model(peers, exported):
    """The exported rows, pushed through the exported weights without any Normalization,
    give exactly what fedglobal's own initial model (Normalization layer included) gives
    on the raw encoded rows: same rows, same standardisation, same weights in order."""
    from fedglobal import data
    from fedglobal.config import load_config
    from fedglobal.server.app import initial_weights

    toml, npz, meta = exported
    cfg = load_config(str(toml))
    regions = sorted(data.list_regions(cfg), key=str)
    assert meta["regions"] == regions and len(regions) == 8
    schema = data.merge_stats([data.region_stats(cfg, r) for r in regions], cfg)
    model, _ = initial_weights(cfg, schema)
    with np.load(npz) as saved:
        kernel, bias = saved["w_0"], saved["w_1"]
        assert meta["num_weights"] == 2 and kernel.shape == (60, 10) and bias.shape == (10,)
        for i in (0, 5):
            raw = data.encode_region(cfg, regions[i], schema)
            np.testing.assert_array_equal(saved[f"y_train_{i}"], raw.y_train)
            np.testing.assert_array_equal(saved[f"y_test_{i}"], raw.y_test)
            assert saved[f"x_train_{i}"].shape == raw.x_train.shape
            logits = saved[f"x_test_{i}"] @ kernel + bias
            ours = np.exp(logits - logits.max(axis=1, keepdims=True))
            ours /= ours.sum(axis=1, keepdims=True)
            theirs = np.asarray(model(raw.x_test))
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)
            # standardised: not the raw features
            assert not np.allclose(saved[f"x_test_{i}"], raw.x_test)
    assert meta["train_rows"] > 0 and meta["input_dim"] == 60 and meta["num_classes"] == 10


def test_exported_cohorts_are_the_regions_fedglobal_trains(peers, exported, tmp_path):
    """A real (small) fedglobal run trains, round by round, the exported cohorts; the
    benchmark's parsers read that run's history."""
    import fedglobal

    toml, npz, meta = exported
    result = fedglobal.simulate(str(toml), output_dir=tmp_path, quiet=True)
    with np.load(npz) as saved:
        cohorts = saved["cohorts"].tolist()
    assert len(cohorts) == 3 and all(len(c) == 3 for c in cohorts) and meta["per_round"] == 3
    assert len({tuple(c) for c in cohorts}) > 1  # sampled per round, not fixed
    assert meta["cohorts"] == cohorts
    # the row order of each (round, region): what fedglobal's client plans
    from clients.regional import RegionalClient
    from fedglobal import data
    from fedglobal.config import load_config

    cfg = load_config(str(toml))
    schema = data.merge_stats([data.region_stats(cfg, r) for r in meta["regions"]], cfg)
    with np.load(npz) as saved:
        for rnd in (1, 3):
            i = cohorts[rnd - 1][0]
            arrays = data.encode_region(cfg, meta["regions"][i], schema)
            planned = RegionalClient(arrays, cfg, schema).plan(rnd).order
            np.testing.assert_array_equal(saved[f"order_{rnd}_{i}"], planned)
            assert not np.array_equal(planned, np.arange(len(planned)))  # shuffled
    expected = {r + 1: sorted(meta["regions"][i] for i in c) for r, c in enumerate(cohorts)}
    assert peers.expected_trained(meta) == expected
    assert peers.trained_regions(result.run_dir) == expected
    accuracy = peers.fedglobal_accuracy(result.run_dir)
    assert accuracy == pytest.approx(float(result.metric("accuracy").iloc[-1]))


def test_plan_selects_each_comparison_once(peers):
    jobs = peers.plan(["flower", "w1"])
    assert [(j.workload, j.system) for j in jobs] == [
        ("w1", "fedglobal"),
        ("w1", "pfl"),
        ("w1", "flower"),
    ]
    jobs = peers.plan(["cnn"], ["client.cohort=true"])
    assert [j.label for j in jobs] == ["fedglobal", "fedglobal --set client.cohort=true", "pfl"]
    with pytest.raises(ValueError, match="choose one or more of w1, cnn, flower"):
        peers.plan(["w2"])
    with pytest.raises(ValueError):
        peers.plan([])


def test_summary_takes_medians_and_ratios_to_fedglobal(peers):
    M = peers.Measurement
    fg, pfl = peers.Job("w1", "fedglobal"), peers.Job("w1", "pfl")
    flower = peers.Job("w1", "flower")
    rows = peers.summarise(
        {
            fg: [M(10.0, 500.0, 0.58), M(12.0, 520.0, 0.58), M(30.0, 510.0, 0.58)],
            pfl: [M(20.0, 700.0, 0.59), M(24.0, 690.0, 0.59), M(25.0, 710.0, 0.59)],
            flower: [M(240.0, 3000.0, 0.57)],
            peers.Job("cnn", "pfl"): [],
        }
    )
    by = {r["system"]: r for r in rows}
    assert set(by) == {"fedglobal", "pfl", "flower"}  # no row for a job without runs
    assert by["fedglobal"]["wall_s"] == 12.0 and by["fedglobal"]["peak_rss_mb"] == 510.0
    assert by["pfl"]["wall_ratio"] == pytest.approx(2.0)
    assert by["pfl"]["rss_ratio"] == pytest.approx(700 / 510)
    assert by["flower"]["wall_ratio"] == pytest.approx(20.0)
    assert by["pfl"]["accuracy_diff"] == pytest.approx(0.01)
    text = peers.table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["workload", "system", "wall"]
    assert "20.00" in lines[-1] and "240.0" in lines[-1]
    # a peer without a fedglobal row on its workload has no ratio
    alone = peers.summarise({peers.Job("cnn", "pfl"): [M(5.0, 100.0, None)]})
    assert alone[0]["wall_ratio"] is None and alone[0]["accuracy"] is None
    assert "-" in peers.table(alone).splitlines()[-1]


def test_json_tail_finds_the_result_after_other_output(peers):
    text = 'Central val | accuracy : 0.5\n{"accuracy": 0.5}\nnot json {\n'
    assert peers.json_tail(text) == {"accuracy": 0.5}
    with pytest.raises(ValueError, match="no JSON line"):
        peers.json_tail("nothing here\n{broken}")


def test_descendants_follow_parent_links_only(peers):
    """(pid, start time) -> parent pid; an unrelated process is not in the tree."""
    processes = {(10, 5): 1, (11, 6): 10, (12, 7): 11, (13, 8): 1, (14, 9): 13}
    assert peers.descendants(10, processes) == {(10, 5), (11, 6), (12, 7)}
    assert peers.descendants(99, processes) == set()


def test_measure_sums_the_tree_and_stops_what_outlives_it(peers, tmp_path):
    """Peak RSS counts a child's memory; a grandchild left running is stopped by pid."""
    script = (
        "import subprocess, sys, time\n"
        "left = subprocess.Popen(['sleep', '60'])\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import time; x = bytearray(120_000_000); time.sleep(1.5)'])\n"
        "print(left.pid, flush=True)\n"
        "child.wait()\n"
    )
    wall, rss, out = peers.measure(
        [sys.executable, "-c", script], env=dict(os.environ), timeout=60, log=tmp_path / "err"
    )
    left = int(out.split()[0])
    assert wall >= 1.5
    assert rss > 120  # MB: the child's bytearray
    deadline = time.monotonic() + 5
    while (stat := peers._stat(left)) is not None and stat[1] != "Z":
        assert time.monotonic() < deadline, f"pid {left} still running"
        time.sleep(0.1)
    with pytest.raises(RuntimeError, match="exited 3"):
        peers.measure(
            [sys.executable, "-c", "raise SystemExit(3)"],
            env=dict(os.environ),
            timeout=60,
            log=tmp_path / "err2",
        )
