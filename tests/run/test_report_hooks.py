"""Server-side hooks: on_round_end, custom server evaluation, early stopping (config and Python)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import fedglobal
from fedglobal.errors import ConfigError
from fedglobal.run.results import check_run
from fedglobal.server.callbacks import EarlyStopping, ServerHook, StopRun, as_hooks, current

# -- EarlyStopping on its own ---------------------------------------------------------------


def _feed(stopper: EarlyStopping, values: list[float]) -> int | None:
    """The round at which ``stopper`` stops on ``values`` (rounds 1..n), or None."""
    for r, v in enumerate(values, 1):
        try:
            stopper.on_round_end(r, {f"{stopper.split}/{stopper.metric}": v})
        except StopRun:
            return r
    return None


def test_early_stopping_modes_and_patience():
    assert _feed(EarlyStopping("r2", patience=2), [0.1, 0.2, 0.2, 0.19]) == 4
    assert _feed(EarlyStopping("loss", patience=1), [3.0, 2.0, 2.5]) == 3
    assert _feed(EarlyStopping("loss", patience=1), [3.0, 2.0, 1.0]) is None
    assert _feed(EarlyStopping("r2", patience=1, min_delta=0.05), [0.1, 0.12]) == 2
    assert _feed(EarlyStopping("mae", mode="max", patience=1), [1.0, 0.5]) == 2
    assert _feed(EarlyStopping("r2", patience=1), [math.nan, 0.1, math.nan]) == 3


def test_early_stopping_reason_names_metric_and_best_round():
    stopper = EarlyStopping("accuracy", split="server", patience=2)
    with pytest.raises(StopRun) as info:
        for r, v in enumerate([0.5, 0.7, 0.6, 0.65], 1):
            stopper.on_round_end(r, {"server/accuracy": v})
    assert "server accuracy did not increase" in info.value.reason
    assert "best 0.7 at round 2" in info.value.reason


def test_early_stopping_on_an_unrecorded_metric_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"'server/r2'.*test/r2"):
        EarlyStopping("r2", split="server").on_round_end(1, {"test/r2": 0.5})
    with pytest.raises(ConfigError, match="patience"):
        EarlyStopping("r2", patience=0)
    with pytest.raises(ConfigError, match="split"):
        EarlyStopping("r2", split="validation")


def test_hooks_are_normalised_and_scoped():
    def fn(server_round, metrics):
        return None

    hooks = as_hooks([fn, EarlyStopping("r2")])
    assert [type(h).__name__ for h in hooks] == ["FunctionHook", "EarlyStopping"]
    with pytest.raises(ConfigError, match="ServerHook or a function"):
        as_hooks([42])
    assert current() == []


# -- in a run -------------------------------------------------------------------------------


class HoldoutR2(ServerHook):
    """A custom server-side evaluation: R² on the data's own held-out rows."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = x, y
        self.rounds: list[int] = []

    def evaluate(self, server_round, model):
        self.rounds.append(server_round)
        pred = np.asarray(model(self.x, training=False)).ravel()
        sse = float(((self.y - pred) ** 2).sum())
        return {"r2": 1 - sse / float(((self.y - self.y.mean()) ** 2).sum())}


@pytest.mark.slow
def test_python_hooks_see_every_round_and_add_server_metrics(data_folder, make_experiment):
    holdout = pd.read_csv(data_folder / "holdout.csv")
    hook = HoldoutR2(holdout[["x1", "x2"]].to_numpy("float32"), holdout.y.to_numpy())
    seen: list[tuple[int, dict]] = []
    ended: list[dict] = []

    class End(ServerHook):
        def on_run_end(self, summary):
            ended.append(dict(summary))

    result = fedglobal.simulate(
        make_experiment("hooks"),
        hooks=[hook, lambda r, m: seen.append((r, dict(m))), End()],
        quiet=True,
    )
    assert hook.rounds == [0, 1, 2]
    assert [r for r, _ in seen] == [1, 2]
    assert {"train/loss", "test/r2", "server/r2"} <= set(seen[-1][1])
    assert seen[-1][1]["server/r2"] == pytest.approx(result.final("r2", split="server"))
    assert ended and ended[0]["name"] == "hooks" and "plots" in ended[0]
    assert check_run(result.run_dir) == []


@pytest.mark.slow
def test_early_stopping_from_the_experiment_file_stops_cleanly(make_experiment):
    cfg = make_experiment(
        "early",
        experiment={"rounds": 6},
        # no round can improve R² by 10: round 1 sets the best, round 2 stops the run
        server={
            "early_stopping_metric": "r2",
            "early_stopping_patience": 1,
            "early_stopping_min_delta": 10.0,
        },
    )
    result = fedglobal.simulate(cfg, quiet=True)
    stopped = result.stopped
    assert stopped["round"] == 2 and stopped["by"] == "EarlyStopping"
    assert "test r2 did not increase" in stopped["reason"]
    assert result.history["round"].max() == 2 and result.summary["rounds"] == 2
    ckpt = np.load(result.run_dir / "checkpoint.npz")
    assert int(ckpt["__round__"]) == 2
    for var in result.model.weights:  # the saved model is the global model after round 2
        np.testing.assert_array_equal(var.numpy(), ckpt[var.path])
    assert list(result.rounds["round"]) == [0, 1, 2]
    assert check_run(result.run_dir) == []


@pytest.mark.slow
def test_a_hook_can_stop_the_run_with_a_reason(make_experiment):
    def stop_at_one(server_round, metrics):
        if server_round == 1:
            raise StopRun("enough for a test")

    result = fedglobal.simulate(make_experiment("stop"), hooks=stop_at_one, quiet=True)
    assert result.stopped == {"round": 1, "reason": "enough for a test", "by": "FunctionHook"}


def test_hooks_need_the_inprocess_engine(make_experiment):
    with pytest.raises(ConfigError, match="only with engine 'inprocess'"):
        fedglobal.simulate(make_experiment("ray"), engine="ray", hooks=[lambda r, m: None])


def test_early_stopping_config_is_validated(make_experiment):
    cfg = make_experiment("bad", server={"early_stopping_split": "validation"})
    with pytest.raises(ConfigError, match="early_stopping_split"):
        fedglobal.simulate(cfg, quiet=True)
