"""End to end on the in-process engine: personalised evaluation (FedPer) and the FedProx
config keys reaching the clients (proximal mu, stragglers' local steps)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import fedglobal

pytestmark = pytest.mark.slow

ROUNDS = 4


@pytest.fixture(scope="module")
def three_regions(tmp_path_factory):
    """Three regions whose target has opposite signs: one shared head cannot fit them all."""
    rng = np.random.default_rng(0)
    frames = []
    for region, slope in [("north", 1.0), ("south", -1.0), ("east", 2.0)]:
        x = rng.normal(size=(150, 2))
        y = slope * x[:, 0] + 0.05 * rng.normal(size=150)
        frames.append(pd.DataFrame({"region": region, "x1": x[:, 0], "x2": x[:, 1], "y": y}))
    path = tmp_path_factory.mktemp("three") / "three.csv"
    pd.concat(frames).to_csv(path, index=False)
    return path


def experiment(csv, tmp_path, strategy):
    return {
        "experiment": {
            "name": "catalogue",
            "seed": 1,
            "rounds": ROUNDS,
            "output_dir": str(tmp_path),
        },
        "data": {"source": f"csv:{csv}", "region": "region", "target": "y"},
        "model": {"name": "mlp", "hidden": [8]},
        "client": {"epochs": 3, "batch_size": 16, "learning_rate": 0.02},
        "strategy": strategy,
    }


def final_r2(result):
    h = result.history
    rows = h[(h["round"] == ROUNDS) & (h.split == "test") & (h.metric == "r2")]
    return dict(zip(rows.region, rows.value, strict=True))


def test_fedper_evaluates_each_region_with_its_own_head(three_regions, tmp_path):
    fedavg = final_r2(
        fedglobal.simulate(experiment(three_regions, tmp_path, {"name": "fedavg"}), quiet=True)
    )
    fedper = fedglobal.simulate(
        experiment(three_regions, tmp_path, {"name": "fedper", "head": "output/*"}), quiet=True
    )
    r2 = final_r2(fedper)
    assert set(r2) == {"north", "south", "east", "all"}
    # a personal head per region fits every region; one shared head cannot
    assert min(r2.values()) > 0.9, r2
    assert min(fedavg.values()) < 0.5, fedavg
    # the server never averaged the heads: its copy is still the seeded initial one
    import keras

    from fedglobal.data import Schema
    from fedglobal.models import build_model

    schema = Schema.from_json((fedper.run_dir / "schema.json").read_text())
    keras.utils.set_random_seed(fedper.config.experiment.seed)
    initial = build_model(fedper.config.model, schema)
    final = {v.path: v.numpy() for v in fedper.model.weights}
    np.testing.assert_array_equal(
        final["output/kernel"], initial.get_layer("output").kernel.numpy()
    )


@pytest.mark.parametrize("cohort", [False, "auto"])
def test_fedprox_mu_and_straggler_steps_reach_the_clients(
    three_regions, tmp_path, monkeypatch, cohort
):
    """Both training paths get FedProx's mu and the stragglers' local steps: Keras fit
    (cohort = false) and cohort training (the default), one call per region and round."""
    from clients.cohort import CohortTrainer
    from clients.regional import RegionalClient

    calls = []
    original = RegionalClient.fit
    original_cohort = CohortTrainer.fit

    def spy(self, weights, server_round, **kwargs):
        calls.append((server_round, self.region, kwargs))
        return original(self, weights, server_round, **kwargs)

    def spy_cohort(self, jobs):
        for job in jobs:
            steps = job.plan.steps if job.plan.steps < job.client.full_steps() else None
            kwargs = {"proximal_mu": job.proximal_mu, "local_steps": steps}
            calls.append((spy_cohort.round, job.client.region, kwargs))
        spy_cohort.round += 1
        return original_cohort(self, jobs)

    spy_cohort.round = 1
    monkeypatch.setattr(RegionalClient, "fit", spy)
    monkeypatch.setattr(CohortTrainer, "fit", spy_cohort)
    strategy = {
        "name": "fedprox",
        "proximal_mu": 0.1,
        "stragglers": 0.5,
        "straggler_max_steps": 2,
    }
    raw = experiment(three_regions, tmp_path, strategy)
    raw["client"]["cohort"] = cohort
    result = fedglobal.simulate(raw, quiet=True)
    assert len(calls) == 3 * ROUNDS
    assert all(kw["proximal_mu"] == 0.1 for _, _, kw in calls)
    for server_round in range(1, ROUNDS + 1):
        steps = [kw["local_steps"] for r, _, kw in calls if r == server_round]
        assert sum(s is not None for s in steps) == 1  # int(3 * 0.5) straggler per round
        assert all(s is None or 1 <= s <= 2 for s in steps)
    assert np.isfinite(result.final("loss"))
