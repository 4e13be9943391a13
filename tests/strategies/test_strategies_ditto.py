"""Ditto (Li et al. 2021): the server is FedAvg with two config keys; each region trains a
personal model towards the global one (golden, against manual gradients; cohort equal
to Keras ``fit``), keeps it, and is evaluated on it; whole runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import ConfigRecord

import fedglobal
from clients.cohort import CohortJob, trainer_for
from clients.regional import RegionalClient
from fedglobal.models import build_model
from strategies import Ditto, FedAvg
from strategies.ditto import LAMBDA_KEY, PERSONAL_KEY
from strategies.errors import InvalidParameterError
from tests.strategies.helpers import sgd_by_hand
from tests.strategies.test_strategies_catalogue import (
    NodesOnlyGrid,
    configure,
    run_round,
    to_record,
)
from tests.strategies.test_strategies_scaffold_client import csv, setup  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("task_identity")


def f32(*values):
    return np.array(values, dtype=np.float32)


def test_configs_ask_for_personal_models_and_aggregation_is_fedavg():
    strategy = Ditto(lam=0.5, min_train_clients=1, min_evaluate_clients=1, min_available_clients=1)
    (msg,) = configure(strategy, 1, {"w": f32(1)}, [1])
    config = msg.content["config"]
    assert config[LAMBDA_KEY] == 0.5 and config[PERSONAL_KEY] is True
    (evaluate,) = strategy.configure_evaluate(
        1, to_record({"w": f32(1)}), ConfigRecord(), NodesOnlyGrid([1])
    )
    assert evaluate.content["config"][PERSONAL_KEY] is True
    assert LAMBDA_KEY not in evaluate.content["config"]
    rng = np.random.default_rng(2)
    current = {"w": rng.normal(size=(4,)).astype(np.float32)}
    updates = [{"w": rng.normal(size=(4,)).astype(np.float32)} for _ in range(3)]
    ours = run_round(Ditto(min_available_clients=3), 1, current, updates, [1, 4, 2])
    theirs = run_round(FedAvg(min_available_clients=3), 1, current, updates, [1, 4, 2])
    np.testing.assert_array_equal(ours["w"], theirs["w"])
    with pytest.raises(InvalidParameterError, match="lam must be"):
        Ditto(lam=-1)


def starts(client, seed):
    rng = np.random.default_rng(seed)
    return [
        {
            n: rng.normal(scale=0.5, size=w.shape).astype(w.dtype)
            for n, w in client.get_weights().items()
        }
        for _ in range(2)
    ]


def test_personal_step_golden_against_manual_gradients(csv):  # noqa: F811
    """Two full-batch SGD steps from v towards w: v <- v - lr (grad F(v) + lam (v - w))."""
    cfg, schema, clients = setup(csv, steps=2)
    cfg = cfg.replace({"client.batch_size": len(clients[0].arrays.x_train)})
    client = RegionalClient(clients[0].arrays, cfg, schema)
    personal, global_weights = starts(client, 3)
    lam, lr = 0.8, 0.1
    ours = client.fit(personal, 1, proximal_mu=lam, proximal_anchor=global_weights).weights

    towards_global = {"lr": lr, "extra": lambda v: lam * (v - global_weights[v.path])}
    manual = sgd_by_hand(
        build_model(cfg.model, schema), personal, client.arrays, steps=2, **towards_global
    )
    for path, value in manual.items():
        np.testing.assert_allclose(ours[path], value, rtol=1e-5, atol=1e-6)
    # the anchor matters: anchored at the start (FedProx) is another step
    fedprox = client.fit(personal, 1, proximal_mu=lam).weights
    assert any(not np.allclose(fedprox[n], ours[n], atol=1e-4) for n in ours)


def test_cohort_trains_personal_models_like_keras_fit(csv):  # noqa: F811
    _, _, clients = setup(csv, epochs=2)
    jobs, sequential = [], []
    for k, client in enumerate(clients):
        personal, global_weights = starts(client, k)
        sequential.append(
            client.fit(personal, 2, proximal_mu=0.3, proximal_anchor=global_weights).weights
        )
        jobs.append(CohortJob(client, personal, client.plan(2), 0.3, anchor=global_weights))
    cohort = trainer_for(clients[0]._compiled, 8, True).fit(jobs)
    for seq, coh in zip(sequential, cohort, strict=True):
        for name in seq:
            np.testing.assert_allclose(coh.weights[name], seq[name], rtol=2e-4, atol=2e-4)


def run(csv, tmp_path, strategy, cohort, rounds=4):  # noqa: F811
    raw = {
        "experiment": {"rounds": rounds, "output_dir": str(tmp_path), "name": "d", "seed": 5},
        "data": {"source": f"csv:{csv}", "region": "r", "target": "y", "min_region_rows": 2},
        "model": {"name": "mlp", "hidden": [4]},
        "client": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 8, "cohort": cohort},
        "strategy": {"min_available_clients": 3, "min_train_clients": 3, **strategy},
        "output": {"tensorboard": False, "plots": False},
    }
    return fedglobal.simulate(raw, quiet=True)


def _final(run_dir):
    with np.load(run_dir / "checkpoint.npz") as npz:
        return {k: npz[k] for k in npz.files}


def test_runs_global_model_is_fedavgs_and_evaluation_is_personal(csv, tmp_path):  # noqa: F811
    """The regions differ by an offset (0, 1, 2) the shared model cannot see: personal
    models fit it, so the regions' personalised test loss is below FedAvg's."""
    ditto = {
        c: run(csv, tmp_path / f"d{c}", {"name": "ditto", "lam": 0.01}, c) for c in (True, False)
    }
    fedavg = {c: run(csv, tmp_path / f"f{c}", {"name": "fedavg"}, c) for c in (True, False)}
    training = ditto[True].summary["training"]
    assert training["path"] == "cohort" and training["fallbacks"] == {}
    for cohort in (True, False):
        a, b = _final(ditto[cohort].run_dir), _final(fedavg[cohort].run_dir)
        for name in a:  # the global model's trajectory is FedAvg's, bit for bit
            np.testing.assert_array_equal(a[name], b[name])

        def regions_loss(result):
            h = result.history
            rows = h[(h["round"] == 4) & (h["split"] == "test") & (h["metric"] == "loss")]
            return rows[rows["region"] != "all"]["value"].mean()

        assert regions_loss(ditto[cohort]) < 0.8 * regions_loss(fedavg[cohort])
    keras_fit, cohort = (ditto[c].history["value"].to_numpy() for c in (False, True))
    np.testing.assert_allclose(cohort, keras_fit, rtol=1e-3, atol=1e-4)


def test_personal_models_are_saved_and_exported(csv, tmp_path):  # noqa: F811
    """[output] personal_models: each region's whole personal model, which is what the
    last round's federated evaluation scored (its R² on the region's test rows)."""
    from clients.regional import RegionalClient as Client
    from fedglobal import data as fdata

    raw = {
        "experiment": {"rounds": 2, "output_dir": str(tmp_path), "name": "p", "seed": 5},
        "data": {"source": f"csv:{csv}", "region": "r", "target": "y", "min_region_rows": 2},
        "model": {"name": "mlp", "hidden": [4]},
        "client": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 8},
        "strategy": {"name": "ditto", "lam": 0.01, "min_available_clients": 3},
        "output": {"tensorboard": False, "plots": False, "personal_models": True},
    }
    result = fedglobal.simulate(raw, quiet=True)
    info = result.summary["personal_models"]
    assert info["regions"] == ["r0", "r1", "r2"] and not info["failed"]
    schema = fdata.Schema.from_json((result.run_dir / "schema.json").read_text())
    h = result.history
    for region in info["regions"]:
        model = result.personal_model(region)
        arrays = fdata.encode_region(result.config, region, schema)
        client = Client(arrays, result.config, schema)
        scored = client.score(np.asarray(model(arrays.x_test)))
        logged = h[(h["round"] == 2) & (h["region"] == region) & (h["metric"] == "r2")]
        assert scored.metrics["r2"] == pytest.approx(float(logged["value"].iloc[0]), abs=1e-5)


def test_the_simulated_clock_counts_both_models(csv, tmp_path):  # noqa: F811
    """[geo]: a Ditto region trains two models per local step: twice FedAvg's compute_s."""
    times = {}
    for name in ("fedavg", "ditto"):
        raw = {
            "experiment": {"rounds": 1, "output_dir": str(tmp_path / name), "name": name},
            "data": {"source": f"csv:{csv}", "region": "r", "target": "y", "min_region_rows": 2},
            "model": {"name": "mlp", "hidden": [4]},
            "strategy": {"name": name, "min_available_clients": 3},
            "geo": {
                "server": [50.1, 8.7],
                "regions": {
                    "r0": {"lat": 48.9, "lon": 2.35},
                    "r1": {"lat": 40.4, "lon": -3.7},
                    "r2": {"lat": 52.5, "lon": 13.4},
                },
            },
            "output": {"tensorboard": False, "plots": False},
        }
        result = fedglobal.simulate(raw, quiet=True)
        times[name] = pd.read_csv(result.run_dir / "sim_times.csv").set_index("region")
    ratio = times["ditto"]["compute_s"] / times["fedavg"]["compute_s"]
    np.testing.assert_allclose(ratio.to_numpy(), 2.0, rtol=1e-9)
    assert (times["ditto"]["steps"] == times["fedavg"]["steps"]).all()
