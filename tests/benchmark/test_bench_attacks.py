"""Client-side attacks (clients/attacks.py) on real regional clients and real Messages."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from clients import attacks
from clients.attacks import AttackPlan


@pytest.fixture(scope="module")
def real_clients():
    """Two real RegionalClients of FedProx Synthetic(1,1) (4 devices), sharing one schema."""
    import fedglobal
    from clients.regional import RegionalClient
    from fedglobal import data

    cfg = fedglobal.load_config(
        {
            "data": {"source": "synthetic:fedprox", "task": "classification", "num_regions": 4},
            "model": {"name": "logistic"},
            "client": {"steps": 2, "optimizer": "sgd", "learning_rate": 0.05},
        }
    )
    regions = data.list_regions(cfg)[:2]
    tables = [data.load_region(cfg, r) for r in regions]
    schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
    return [RegionalClient(data.encode(t, schema), cfg, schema) for t in tables]


def test_plan_validation_and_json_round_trip():
    plan = AttackPlan.create("noise", ["b", "a"], seed=3)
    assert plan.regions == ("a", "b") and plan.scale == 1.0
    assert AttackPlan.create("sign-flip", ["a"]).scale == 4.0
    assert AttackPlan.from_json(plan.to_json()) == plan
    with pytest.raises(ValueError, match="not one of"):
        AttackPlan.create("backdoor", ["a"])
    with pytest.raises(ValueError, match="scale"):
        AttackPlan.create("noise", ["a"], scale=-1.0)


def test_active_sets_and_restores_the_process_plan():
    assert attacks.current() is None
    plan = AttackPlan.create("noise", ["a"])
    with attacks.active(plan):
        assert attacks.current() == plan
        assert json.loads(os.environ[attacks.ENV_VAR])["kind"] == "noise"
    assert attacks.current() is None and attacks.ENV_VAR not in os.environ


def test_sign_flip_reverses_and_scales_the_update():
    g = {"w": np.array([1.0, 2.0], np.float32), "step": np.array([5], np.int64)}
    local = {"w": np.array([1.5, 1.0], np.float32), "step": np.array([6], np.int64)}
    plan = AttackPlan.create("sign-flip", ["x"], scale=2.0)
    out = attacks.poisoned_weights(plan, local, g, "x", 1)
    np.testing.assert_allclose(out["w"], [0.0, 4.0])  # g - 2 (w - g)
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["step"], [6])  # integer state is left alone


def test_noise_is_large_and_seeded_by_round_and_region():
    g = {"w": np.zeros((50, 10), np.float32)}
    plan = AttackPlan.create("noise", ["x", "y"], scale=3.0, seed=1)
    a = attacks.poisoned_weights(plan, g, g, "x", 1)["w"]
    assert a.std() == pytest.approx(3.0, rel=0.1)
    np.testing.assert_array_equal(a, attacks.poisoned_weights(plan, g, g, "x", 1)["w"])
    assert not np.array_equal(a, attacks.poisoned_weights(plan, g, g, "x", 2)["w"])
    assert not np.array_equal(a, attacks.poisoned_weights(plan, g, g, "y", 1)["w"])


def test_label_flip_swaps_training_labels_only_for_attackers(real_clients, tmp_path):
    honest, other = real_clients
    plan = AttackPlan.create("label-flip", [honest.region], log_path=tmp_path / "attack.log")
    assert attacks.for_training(honest) is honest  # no plan: unchanged
    attacks.reset_counts()
    with attacks.active(plan):
        flipped = attacks.for_training(honest)
        assert attacks.for_training(other) is other
        assert attacks.for_training(honest) is flipped  # cached
    assert attacks.applied()["label-flip"] == 2
    assert attacks.logged(tmp_path / "attack.log") == [("label-flip", honest.region, "")] * 2
    top = honest.schema.num_classes - 1  # class indices of the schema
    np.testing.assert_array_equal(flipped.arrays.y_train, top - honest.arrays.y_train)
    np.testing.assert_array_equal(flipped.arrays.y_test, honest.arrays.y_test)  # clean test
    assert flipped.model is honest.model  # the compiled model is shared, not rebuilt
    # training on flipped labels gives a different update from the same start
    w = honest.get_weights()
    a = honest.fit(w, 1).weights
    b = flipped.fit(w, 1).weights
    assert any(not np.allclose(a[k], b[k]) for k in a)


def test_poison_update_on_a_real_train_message(real_clients):
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedglobal.protocol import to_record

    client = real_clients[0]
    start = client.get_weights()
    result = client.fit(start, 1)
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    try:
        content = RecordDict(
            {"arrays": to_record(start), "config": ConfigRecord({"server-round": 3})}
        )
        message = Message(content, 1001, "train")
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    assert attacks.poison_update(result, message, client.region) is result  # no plan
    plan = AttackPlan.create("sign-flip", [client.region], scale=1.0)
    with attacks.active(plan):
        poisoned = attacks.poison_update(result, message, client.region)
        assert attacks.poison_update(result, message, "elsewhere") is result
    for name, w in result.weights.items():
        np.testing.assert_allclose(poisoned.weights[name], 2 * start[name] - w, atol=1e-6)
    assert poisoned.num_examples == result.num_examples


def test_an_attack_cell_poisons_real_updates_through_the_clientapp(
    tmp_path, tiny_suite, write_suite
):
    """End to end: the attack reaches the clients through clients/app.py's two hooks.

    The runner fails a cell whose planned attack no client applied, so an ok cell
    means poisoned updates really were sent.
    """
    from fedglobal.benchmark import run_benchmark

    tiny_suite["suite"]["seeds"] = [0]
    tiny_suite["base"]["experiment"]["rounds"] = 1
    tiny_suite["strategies"] = [{"label": "FedAvg", "name": "fedavg"}]
    tiny_suite["conditions"] = [
        {"label": "flip", "attack": {"kind": "sign-flip", "fraction": 0.5}},
        {"label": "labels", "attack": {"kind": "label-flip", "fraction": 0.5}},
    ]
    result = run_benchmark(write_suite(tiny_suite), output_dir=tmp_path, quiet=True, plots=False)
    assert len(result.cells) == 2
    for cell in result.cells:
        assert cell.ok, cell.error
