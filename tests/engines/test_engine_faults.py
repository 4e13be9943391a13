"""Failing regions on the in-process engine: a client raises, hangs, or its worker dies.

Faults are injected for real through ``FEDGLOBAL_FAULTS`` (:mod:`clients.faults`),
read by the ClientApp's ``fault_mod`` in whichever process serves the region
(the worker pool mirrors the variable into its workers). The tiny experiment
has 3 regions (africa, asia, europe) and needs 2 train replies per round.
With ``workers = 2`` each stage's regions are shared out by rows, largest first,
to the least loaded process, ties to the worker: europe (115 rows, the largest)
goes to the one worker process, africa and asia (90 + 95) to the server's own.
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import fedglobal
from clients import faults
from fedglobal.engines import pool
from fedglobal.errors import RunError

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True, scope="module")
def _resource_tracker() -> None:
    """multiprocessing's shared resource tracker (started by the first spawn pool of the
    session, alive until pytest exits) is started before the tests, not counted as theirs."""
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()


def _raw(tiny: dict, tmp_path, **experiment) -> dict:
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(output_dir=str(tmp_path / "runs"), **experiment)
    raw["output"] = {"tensorboard": False, "plots": False}
    return raw


def _plan(monkeypatch, *items: dict) -> None:
    monkeypatch.setenv(faults.ENV_VAR, json.dumps(list(items)))


def _trained(result, server_round: int) -> set[str]:
    h = result.history
    return set(h[(h["round"] == server_round) & (h.split == "train")].region)


def test_a_client_that_raises_fails_its_region_and_the_round_completes(tiny, tmp_path, monkeypatch):
    _plan(monkeypatch, {"region": "asia", "round": 2, "kind": "raise"})
    result = fedglobal.simulate(_raw(tiny, tmp_path), quiet=True)
    assert _trained(result, 1) == {"africa", "asia", "europe", "all"}
    assert _trained(result, 2) == {"africa", "europe", "all"}  # aggregated the other two
    (failed,) = result.summary["failed_replies"]
    assert (failed["round"], failed["stage"], failed["region"]) == (2, "train", "asia")
    assert "InjectedFault" in failed["reason"] and "region asia" in failed["reason"]
    assert result.summary["retried_stages"] == []


def test_below_the_minimum_the_run_stops_naming_the_failed_regions(tiny, tmp_path, monkeypatch):
    _plan(
        monkeypatch,
        {"region": "asia", "round": 1, "kind": "raise"},
        {"region": "europe", "round": 1, "kind": "raise"},
    )
    with pytest.raises(RunError) as err:
        fedglobal.simulate(_raw(tiny, tmp_path, rounds=1), quiet=True)
    text = str(err.value)
    assert "round 1 train: only 1 of 3 regions replied" in text
    assert "minimum of 2" in text and "region asia" in text and "region europe" in text


@pytest.mark.parametrize("cohort", [False, "auto"])
def test_a_retry_resends_the_failed_regions_and_reproduces_a_clean_run(
    tiny, tmp_path, monkeypatch, inprocess_run, cohort
):
    """Retried regions train from the same weights and seed: the history is the clean run's.

    Region by region (cohort = false) to the bit. In cohorts (the default) the retried
    regions train in a cohort of two, the clean run's in one of three: the same maths,
    equal to float rounding (the vectorised program's shapes differ)."""
    if cohort is False:
        clean_raw = _raw(tiny, tmp_path / "clean")
        clean_raw["client"] = {**clean_raw["client"], "cohort": False}
        inprocess_run = fedglobal.simulate(clean_raw, quiet=True)
    _plan(
        monkeypatch,
        {"region": "asia", "round": 1, "kind": "raise", "attempt": 0},
        {"region": "europe", "round": 1, "kind": "raise", "attempt": 0},
    )
    raw = _raw(tiny, tmp_path)
    raw["server"] = {"round_retries": 1}
    raw["client"] = {**raw["client"], "cohort": cohort}
    result = fedglobal.simulate(raw, quiet=True)
    (retry,) = result.summary["retried_stages"]
    assert (retry["round"], retry["stage"], retry["attempt"]) == (1, "train", 1)
    assert retry["regions"] == ["asia", "europe"]
    assert all("InjectedFault" in r for r in retry["reasons"])
    assert result.summary["failed_replies"] == []
    clean = inprocess_run.history.sort_values(["round", "region", "split", "metric"])
    got = result.history.sort_values(["round", "region", "split", "metric"])
    assert got[["round", "region", "split", "metric"]].values.tolist() == (
        clean[["round", "region", "split", "metric"]].values.tolist()
    )
    if cohort is False:
        assert got.value.tolist() == clean.value.tolist()
    else:
        np.testing.assert_allclose(got.value, clean.value, rtol=1e-6, atol=1e-9)
    # the checkpoint keeps the retries: a resumed run still reports them
    more = copy.deepcopy(raw)
    more["experiment"]["rounds"] = raw["experiment"]["rounds"] + 1
    resumed = fedglobal.simulate(more, resume=result.run_dir, quiet=True)
    assert resumed.summary["retried_stages"] == result.summary["retried_stages"]


def test_retries_that_fail_again_stop_the_run_and_say_so(tiny, tmp_path, monkeypatch):
    _plan(
        monkeypatch,
        {"region": "asia", "round": 1, "kind": "raise"},
        {"region": "europe", "round": 1, "kind": "raise"},
    )
    raw = _raw(tiny, tmp_path, rounds=1)
    raw["server"] = {"round_retries": 2}
    with pytest.raises(RunError, match=r"only 1 of 3 regions replied \(after 2 retries"):
        fedglobal.simulate(raw, quiet=True)


def test_a_worker_process_that_dies_mid_round_fails_its_regions_and_is_replaced(
    tiny, tmp_path, monkeypatch
):
    _plan(monkeypatch, {"region": "europe", "round": 1, "kind": "exit"})
    started = len(pool.STARTED)
    result = fedglobal.simulate(_raw(tiny, tmp_path, workers=2), quiet=True)
    (failed,) = result.summary["failed_replies"]
    assert (failed["round"], failed["stage"], failed["region"]) == (1, "train", "europe")
    dead = pool.STARTED[started]
    assert (
        f"worker process {dead} died (exit code {faults.EXIT_CODE}) mid-round" in (failed["reason"])
    )
    assert f"region europe: worker process {dead} died" in failed["reason"]
    assert _trained(result, 1) == {"africa", "asia", "all"}
    # a new worker took its place: europe evaluates in round 1 and trains in round 2
    assert len(pool.STARTED) == started + 2
    assert _trained(result, 2) == {"africa", "asia", "europe", "all"}


def test_a_hung_worker_is_killed_after_the_round_timeout(tiny, tmp_path, monkeypatch):
    _plan(monkeypatch, {"region": "europe", "round": 1, "kind": "hang", "seconds": 600})
    started = len(pool.STARTED)
    result = fedglobal.simulate(_raw(tiny, tmp_path, workers=2, round_timeout=20.0), quiet=True)
    (failed,) = result.summary["failed_replies"]
    assert (failed["round"], failed["stage"], failed["region"]) == (1, "train", "europe")
    hung = pool.STARTED[started]
    assert f"worker process {hung} killed after no reply within 20s" in failed["reason"]
    assert _trained(result, 1) == {"africa", "asia", "all"}
    assert _trained(result, 2) == {"africa", "asia", "europe", "all"}


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ('{"region": "asia", "kind": "explode"}', "'kind' = 'explode' is not one of"),
        ('{"region": "asia", "kind": "raise", "when": 2}', "unknown keys ['when']"),
        ('{"kind": "raise"}', "'region' must be a region name"),
        ('{"region": "asia", "kind": "raise", "round": -1}', "'round' must be an integer >= 0"),
        ("{not json", "FEDGLOBAL_FAULTS is not valid JSON"),
    ],
)
def test_a_bad_fault_plan_says_what_is_wrong(monkeypatch, plan, message):
    monkeypatch.setenv(faults.ENV_VAR, plan)
    with pytest.raises(ValueError) as err:
        faults.plan()
    assert message in str(err.value)
