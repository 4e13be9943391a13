"""``[client] callbacks``: Keras callbacks in local training, named by reference.

The callbacks are real Keras callbacks in real training. The recording one
(``tests/clients/training_callbacks.py``) runs in the client process and reports
through a file.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clients.regional import RegionalClient
from fedglobal import data
from fedglobal.config import load_config
from fedglobal.errors import ConfigError
from tests.clients import training_callbacks

REGIONS = ("east", "north", "south")


def _csv(folder: Path, n: int = 240) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    region = rng.choice(REGIONS, n)
    y = x @ np.array([2.0, -1.0]) + rng.normal(scale=0.2, size=n)
    path = folder / "rows.csv"
    pd.DataFrame({"region": region, "a": x[:, 0], "b": x[:, 1], "y": y}).to_csv(path, index=False)
    return path


def _experiment(folder: Path, callbacks: list, **client) -> dict:
    return {
        "experiment": {"name": "callbacks", "rounds": 2, "output_dir": str(folder / "runs")},
        "data": {"source": f"csv:{_csv(folder)}", "region": "region", "target": "y"},
        "model": {"hidden": [4]},
        "client": {"batch_size": 16, "learning_rate": 0.01, "callbacks": callbacks, **client},
        "output": {"plots": False, "tensorboard": False},
    }


def _record(log: Path) -> dict:
    return {"factory": training_callbacks.REFERENCE, "path": str(log)}


def _client(folder: Path, callbacks: list, **client) -> RegionalClient:
    cfg = load_config(_experiment(folder, callbacks, **client))
    tables = [data.load_region(cfg, r) for r in data.list_regions(cfg)]
    schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
    return RegionalClient(data.encode(tables[0], schema), cfg, schema)


def test_callbacks_see_every_epoch_and_batch_of_every_region_and_round(tmp_path):
    import fedglobal

    log = tmp_path / "fit.jsonl"
    result = fedglobal.simulate(_experiment(tmp_path, [_record(log)], epochs=2), quiet=True)
    rows = training_callbacks.read(log)
    epochs = [r for r in rows if r["event"] == "epoch"]
    fits = [r for r in rows if r["event"] == "fit"]
    assert sorted((r["region"], r["round"]) for r in fits) == [
        (region, rnd) for region in REGIONS for rnd in (1, 2)
    ]
    h = result.history
    for fit in fits:
        region, rnd = fit["region"], fit["round"]
        mine = [r for r in epochs if (r["region"], r["round"]) == (region, rnd)]
        assert [r["epoch"] for r in mine] == [0, 1]
        # every optimizer step reached the batch hook (not one call per 32 steps)
        n_train = len(data.load_region(result.config, region).train)
        assert fit["batches"] == 2 * math.ceil(n_train / 16)
        assert all(math.isfinite(v) for v in fit["batch_losses"])
        # the epoch's loss is the one the client reported to the server
        reported = h[(h.region == region) & (h["round"] == rnd) & (h.split == "train")]
        loss = reported[reported.metric == "loss"].value.item()
        assert mine[-1]["loss"] == pytest.approx(loss, rel=1e-6)


def test_callbacks_run_in_straggler_and_proximal_fits(tmp_path):
    log = tmp_path / "fit.jsonl"
    client = _client(tmp_path, [_record(log)], gradient_accumulation_steps=2)
    start = client.get_weights()
    client.fit(start, server_round=1, local_steps=3, proximal_mu=0.1)
    (fit,) = [r for r in training_callbacks.read(log) if r["event"] == "fit"]
    assert fit["batches"] == 3 and fit["region"] == client.region and fit["round"] == 1


def test_terminate_on_nan_stops_the_fit(tmp_path):
    log = tmp_path / "fit.jsonl"
    client = _client(
        tmp_path,
        ["keras.callbacks:TerminateOnNaN", _record(log)],
        optimizer="sgd",
        learning_rate=1e30,
        epochs=3,
    )
    result = client.fit(client.get_weights(), server_round=1)
    (fit,) = [r for r in training_callbacks.read(log) if r["event"] == "fit"]
    full = 3 * math.ceil(len(client.arrays.x_train) / 16)
    assert fit["batches"] < full
    assert not math.isfinite(fit["batch_losses"][-1])
    assert not math.isfinite(result.metrics["loss"])


def test_early_stopping_ends_local_training(tmp_path):
    log = tmp_path / "fit.jsonl"
    # no epoch improves the loss by 1e9: with patience 0, Keras stops after the second
    stop = {"factory": "keras.callbacks:EarlyStopping", "monitor": "loss", "min_delta": 1e9}
    client = _client(tmp_path, [stop, _record(log)], epochs=5)
    client.fit(client.get_weights(), server_round=1)
    epochs = [r for r in training_callbacks.read(log) if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    # a fresh callback per fit: the next round starts with fresh state and stops alike
    client.fit(client.get_weights(), server_round=2)
    epochs = [r for r in training_callbacks.read(log) if r["event"] == "epoch"]
    assert [(r["round"], r["epoch"]) for r in epochs] == [(1, 0), (1, 1), (2, 0), (2, 1)]


@pytest.mark.parametrize(
    ("callbacks", "message"),
    [
        (["keras.callbacks:TerminateOnNan"], r"has no 'TerminateOnNan'; did you mean 'Termin"),
        (["no_such_module:Cb"], r"importing 'no_such_module' failed with ModuleNotFoundError"),
        (["TerminateOnNaN"], r"client.callbacks\[0\] = 'TerminateOnNaN' is not a callback ref"),
        ([{"monitor": "loss"}], r"needs a 'factory' key"),
        (
            [{"factory": "keras.callbacks:EarlyStopping", "patiance": 2}],
            r"unexpected keyword argument 'patiance'; did you mean 'patience'",
        ),
        (["missing.py:Cb"], r"no such Python file: '.*missing.py'"),
        (["keras:__version__"], r"not a callback class or factory"),
        ([{"factory": training_callbacks.REFERENCE, "region": "x"}], r"'region' is passed by"),
    ],
)
def test_a_bad_callback_is_a_config_error_at_load(tmp_path, callbacks, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(_experiment(tmp_path, callbacks))
    assert str(info.value).startswith("client.callbacks[0]")  # names the entry


def test_a_file_reference_is_relative_to_the_experiment_file(tmp_path):
    (tmp_path / "cb.py").write_text(
        "import keras\n\ndef make():\n    return keras.callbacks.TerminateOnNaN()\n"
    )
    (tmp_path / "exp.toml").write_text(
        '[data]\nsource = "synthetic:fedprox"\ntask = "classification"\n'
        '[client]\ncallbacks = ["cb.py:make"]\n'
    )
    cfg = load_config(tmp_path / "exp.toml")
    assert cfg.client.callbacks == [f"{tmp_path / 'cb.py'}:make"]
    assert load_config(cfg.to_dict()).client.callbacks == cfg.client.callbacks


def test_callbacks_and_explicit_cohort_training_do_not_mix(tmp_path):
    with pytest.raises(ConfigError, match="cohort = false, or 'auto'"):
        load_config(_experiment(tmp_path, ["keras.callbacks:TerminateOnNaN"], cohort=True))


def test_cohort_auto_trains_regions_with_callbacks_one_by_one(tmp_path):
    import fedglobal

    log = tmp_path / "fit.jsonl"
    experiment = _experiment(tmp_path, [_record(log)], cohort="auto")
    experiment["experiment"]["rounds"] = 1
    fedglobal.simulate(experiment, quiet=True)
    fits = [r for r in training_callbacks.read(log) if r["event"] == "fit"]
    assert sorted(r["region"] for r in fits) == list(REGIONS)
