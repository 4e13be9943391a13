"""SCAFFOLD on the client (Karimireddy et al. 2020): the corrected gradient on Keras ``fit``
(golden, against manual gradients) and in cohort training (equal to Keras ``fit``), the
control-variate update of option II, and whole runs: round 1 is FedAvg's, the cohort
path trains SCAFFOLD without falling back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict

import fedglobal
from clients import scaffold
from clients.cohort import CohortJob, trainer_for
from clients.regional import RegionalClient
from fedglobal import data
from fedglobal.config import load_config
from fedglobal.models import build_model
from fedglobal.protocol import from_record, to_record
from strategies.client_metrics import LOCAL_STEPS
from tests.strategies.helpers import sgd_by_hand, write_three_regions

pytestmark = pytest.mark.usefixtures("task_identity")


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    return write_three_regions(tmp_path_factory.mktemp("scaffold") / "rows.csv")


def setup(csv, **client):
    cfg = load_config(
        {
            "data": {"source": f"csv:{csv}", "region": "r", "target": "y", "test_fraction": 0.2},
            "model": {"name": "mlp", "hidden": [4]},
            "client": {"optimizer": "sgd", "learning_rate": 0.1, "batch_size": 8, **client},
        }
    )
    tables = [data.load_region(cfg, r) for r in data.list_regions(cfg)]
    schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
    return cfg, schema, [RegionalClient(data.encode(t, schema), cfg, schema) for t in tables]


def start_and_correction(client, seed=1):
    rng = np.random.default_rng(seed)
    start = {
        n: rng.normal(scale=0.5, size=w.shape).astype(w.dtype)
        for n, w in client.get_weights().items()
    }
    correction = {
        n: rng.normal(scale=0.3, size=start[n].shape).astype(np.float32)
        for n in client.trainable_names
    }
    return start, correction


def test_corrected_step_golden_against_manual_gradients(csv):
    """Two full-batch SGD steps: w_{t+1} = w_t - lr (grad F(w_t) + c - c_i)."""
    cfg, schema, clients = setup(csv, steps=2)
    client = clients[0]
    cfg = cfg.replace({"client.batch_size": len(client.arrays.x_train)})
    client = RegionalClient(client.arrays, cfg, schema)
    start, correction = start_and_correction(client)
    ours = client.fit(start, 1, correction=correction).weights

    model = build_model(cfg.model, schema)
    step = {"steps": 2, "lr": 0.1, "extra": lambda v: correction[v.path]}
    manual = sgd_by_hand(model, start, client.arrays, **step)
    for path, value in manual.items():
        np.testing.assert_allclose(ours[path], value, rtol=1e-5, atol=1e-6)
    # no correction: plain training again (the term is off, an exact zero)
    again = client.fit(start, 1).weights
    without = client.fit(start, 1, correction=None).weights
    for name in again:
        np.testing.assert_array_equal(again[name], without[name])
        assert not np.allclose(again[name], ours[name])


def test_cohort_training_applies_the_same_correction(csv):
    _, _, clients = setup(csv, epochs=2)
    jobs, sequential = [], []
    for k, client in enumerate(clients):
        start, correction = start_and_correction(client, seed=k)
        sequential.append(client.fit(start, 3, correction=correction))
        jobs.append(CohortJob(client, start, client.plan(3), correction=correction))
    cohort = trainer_for(clients[0]._compiled, 8, False, True).fit(jobs)
    uncorrected = [
        client.fit(job.weights, 3).weights for client, job in zip(clients, jobs, strict=True)
    ]
    # float rounding only: here the two paths differ by up to 9e-5 without a correction too
    for seq, coh, plain in zip(sequential, cohort, uncorrected, strict=True):
        for name in seq.weights:
            np.testing.assert_allclose(coh.weights[name], seq.weights[name], rtol=2e-4, atol=2e-4)
        assert max(np.max(np.abs(seq.weights[n] - plain[n])) for n in plain) > 0.05


def test_control_variate_update_option_two(csv):
    """c_i+ = c_i - c + (x - y) / (K lr): stored in the state; only the delta is returned."""
    _, _, clients = setup(csv)
    client = clients[1]
    start, c = start_and_correction(client, seed=4)
    c_i = {n: np.full_like(v, 0.125) for n, v in c.items()}
    context = Context(run_id=1, node_id=2, node_config={}, state=RecordDict(), run_config={})
    context.state[scaffold.STATE_KEY] = to_record(c_i)
    message = Message(
        RecordDict(
            {
                "arrays": to_record(start),
                "config": ConfigRecord({"server-round": 2}),
                scaffold.CONTROL_KEY: to_record(c),
            }
        ),
        dst_node_id=2,
        message_type=MessageType.TRAIN,
    )
    correction = scaffold.correction_for(message, context, client)
    for name in c:
        np.testing.assert_allclose(correction[name], c[name] - 0.125)
    result = client.fit(start, 2, correction=correction, report=[LOCAL_STEPS])
    steps = result.metrics[LOCAL_STEPS]
    assert steps == client.plan(2).steps
    delta = scaffold.control_delta(message, context, client, result)
    stored = from_record(context.state[scaffold.STATE_KEY])
    assert set(delta) == set(stored) == set(client.trainable_names)
    for name in delta:
        expected = 0.125 - c[name] + (start[name] - result.weights[name]) / (steps * 0.1)
        np.testing.assert_allclose(stored[name], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(delta[name], expected - 0.125, rtol=1e-5, atol=1e-6)
    # a message without c: no correction, no state change
    plain = Message(
        RecordDict({"arrays": to_record(start), "config": ConfigRecord({"server-round": 2})}),
        dst_node_id=2,
        message_type=MessageType.TRAIN,
    )
    assert scaffold.correction_for(plain, context, client) is None
    assert scaffold.control_delta(plain, context, client, result) is None
    assert isinstance(context.state[scaffold.STATE_KEY], ArrayRecord)


def run(csv, tmp_path, strategy, cohort, rounds=2):
    raw = {
        "experiment": {"rounds": rounds, "output_dir": str(tmp_path), "name": "s", "seed": 5},
        "data": {"source": f"csv:{csv}", "region": "r", "target": "y", "min_region_rows": 2},
        "model": {"name": "mlp", "hidden": [4]},
        "client": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 8, "cohort": cohort},
        "strategy": {"name": strategy, "min_available_clients": 3, "min_train_clients": 3},
        "output": {"tensorboard": False, "plots": False},
    }
    return fedglobal.simulate(raw, quiet=True)


def test_runs_round_one_is_fedavg_and_the_cohort_does_not_fall_back(csv, tmp_path):
    ours = {c: run(csv, tmp_path / f"s{c}", "scaffold", c) for c in (True, False)}
    fedavg = {c: run(csv, tmp_path / f"f{c}", "fedavg", c) for c in (True, False)}
    training = ours[True].summary["training"]
    assert training["path"] == "cohort" and training["fallbacks"] == {}
    for cohort in (True, False):
        a, b = ours[cohort].history, fedavg[cohort].history
        first = [h[h["round"] == 1].reset_index(drop=True) for h in (a, b)]
        pd.testing.assert_frame_equal(first[0], first[1], check_exact=True)  # c = 0: FedAvg
        later = [h[h["round"] == 2]["value"].to_numpy() for h in (a, b)]
        assert not np.allclose(later[0], later[1])  # c != 0 from round 2 on
    keras_fit, cohort = (ours[c].history["value"].to_numpy() for c in (False, True))
    np.testing.assert_allclose(cohort, keras_fit, rtol=1e-4, atol=1e-5)
