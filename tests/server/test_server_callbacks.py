"""The round-end callbacks (fedglobal.server.callbacks) and RunMonitor, their composer.

Checked on real runs (3 regions of a small CSV table, real Keras and Flower):
the fixed order (each job sees what the ones before it did), the stop flag
(every callback runs in the round that stops; the run ends after it) and the
callbacks' state (a checkpoint's monitor state loads back as it was saved, and
a run resumed from it continues like an uninterrupted one).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from flwr.app import MetricRecord

import fedglobal
from fedglobal.config import ExperimentConfig, load_config
from fedglobal.protocol import to_record
from fedglobal.run import checkpoint
from fedglobal.server.callbacks import RoundCallback, RoundOutcome, ServerHook, StopRun
from fedglobal.server.callbacks.tensorboard import read_scalars
from fedglobal.server.history import HistoryRecorder
from fedglobal.server.monitor import RunMonitor

pytestmark = pytest.mark.slow

ORDER = [
    "ServerEvaluation",
    "WeightNorms",
    "SystemMetrics",
    "TensorBoardLogging",
    "RunHooks",
    "PersonalLayers",
    "GeoOutputs",
    "Plots",
    "MLflowLogging",
]


def _table(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    region = rng.choice(["east", "north", "south"], n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = 3 * x1 - 2 * x2 + rng.normal(scale=0.3, size=n)
    return pd.DataFrame({"region": region, "x1": x1, "x2": x2, "y": y})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("callbacks")
    _table(300, 0).to_csv(folder / "data.csv", index=False)
    _table(60, 1).to_csv(folder / "holdout.csv", index=False)
    return folder


def _experiment(folder: Path, name: str, rounds: int, **sections: dict) -> dict:
    raw: dict = {
        "experiment": {"name": name, "rounds": rounds, "output_dir": str(folder / "runs")},
        "data": {"source": f"csv:{folder / 'data.csv'}", "region": "region", "target": "y"},
        "model": {"hidden": [8]},
        "client": {"learning_rate": 0.01, "batch_size": 32},
        "server": {"eval_source": f"csv:{folder / 'holdout.csv'}"},
        "output": {"tensorboard": True, "plots": False},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return raw


class Probe(ServerHook):
    """At each round's end, what the callbacks before the hooks left behind."""

    def __init__(self, runs: Path) -> None:
        self.runs = runs
        self.seen: dict[int, dict] = {}
        self.summary: dict | None = None
        self.files_at_end: set[str] = set()

    def on_round_end(self, server_round, metrics):
        (run_dir,) = self.runs.glob("order-*")
        scalars = read_scalars(run_dir / "tensorboard")  # flushed by TensorBoardLogging
        self.seen[server_round] = {
            "pooled": dict(metrics),
            "tags_this_round": {t for t, steps in scalars.items() if server_round in steps},
        }

    def on_run_end(self, summary):
        self.summary = dict(summary)
        (run_dir,) = self.runs.glob("order-*")
        self.files_at_end = {p.name for p in run_dir.iterdir()}


def test_callbacks_run_in_their_fixed_order(folder):
    cfg = ExperimentConfig.from_dict(
        _experiment(folder, "all", 1, output={"plots": True, "personal_models": True})
    )
    monitor = RunMonitor(cfg, folder / "unused", HistoryRecorder(task="regression"), None)
    assert [type(c).__name__ for c in monitor.callbacks] == ORDER[:-1]  # no [output] mlflow
    raw = _experiment(folder, "bare", 1, output={"tensorboard": False})
    del raw["server"]
    bare = ExperimentConfig.from_dict(raw)
    monitor = RunMonitor(bare, folder / "unused", HistoryRecorder(task="regression"), None)
    optional = {"TensorBoardLogging", "Plots", "MLflowLogging"}
    assert [type(c).__name__ for c in monitor.callbacks] == [n for n in ORDER if n not in optional]


def test_each_job_sees_what_the_jobs_before_it_did(folder):
    probe = Probe(folder / "runs")
    result = fedglobal.simulate(_experiment(folder, "order", 2), hooks=[probe], quiet=True)
    assert sorted(probe.seen) == [1, 2]
    for server_round, seen in probe.seen.items():
        # ServerEvaluation ran first: the held-out metrics are in the pooled metrics
        assert {"server/loss", "server/r2", "test/r2", "train/loss"} <= set(seen["pooled"])
        # WeightNorms, SystemMetrics and TensorBoardLogging ran before the hooks
        tags = seen["tags_this_round"]
        assert {"test/r2", "server/r2", "comm/bytes_sent", "time/round_seconds"} <= tags
        assert any(t.startswith("weight_norm/") for t in tags)
        assert any(t.startswith("update_norm/") for t in tags), server_round
    history = result.history
    server = history[(history.split == "server") & (history.metric == "r2")]
    assert list(server["round"]) == [0, 1, 2]
    # the hooks' on_run_end comes last: the callbacks' files are written and the summary final
    assert {"rounds.csv", "layer_norms.csv", "summary.json"} <= probe.files_at_end
    assert probe.summary == json.loads((result.run_dir / "summary.json").read_text())
    assert probe.summary["hooks"][0].startswith("HeldOutEvaluation(")


class StopAt(ServerHook):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_round_end(self, server_round, metrics):
        if server_round == self.at:
            raise StopRun(f"round {self.at} is enough")


def test_a_stop_ends_the_run_after_the_round_every_callback_finished(folder):
    after: list[int] = []
    result = fedglobal.simulate(
        _experiment(folder, "stopped", 4),
        hooks=[StopAt(2), lambda r, m: after.append(r)],
        quiet=True,
    )
    assert result.stopped == {"round": 2, "reason": "round 2 is enough", "by": "StopAt"}
    assert after == [1]  # the hooks after the one that stopped do not see its round
    run_dir = result.run_dir
    assert list(pd.read_csv(run_dir / "rounds.csv")["round"]) == [0, 1, 2]
    assert sorted(set(pd.read_csv(run_dir / "layer_norms.csv")["round"])) == [0, 1, 2]
    scalars = read_scalars(run_dir / "tensorboard")
    assert sorted(scalars["comm/bytes_sent"]) == [0, 1, 2]
    assert result.summary["rounds"] == 2


class Recorder(RoundCallback):
    """A callback that notes what it saw and returns what it was told to."""

    def __init__(self, name: str, log: list, *, add: dict | None = None, stop: str = "") -> None:
        self.name, self.log, self.add, self.stop = name, log, add or {}, stop

    def after_round(self, server_round, weights, metrics):
        self.log.append((self.name, server_round, sorted(metrics)))
        return RoundOutcome(self.add, StopRun(self.stop, hook=self.name) if self.stop else None)


def test_every_callback_runs_and_the_first_stop_wins(folder):
    cfg = ExperimentConfig.from_dict(_experiment(folder, "unit", 2))
    monitor = RunMonitor(cfg, folder / "unused", HistoryRecorder(task="regression"), None)
    log: list = []
    monitor.callbacks = [
        Recorder("a", log, add={"server/mae": 1.5, "comm/x": 3.0}),
        Recorder("b", log, stop="b stops"),
        Recorder("c", log, stop="c stops too"),
        Recorder("d", log),
    ]
    arrays = to_record({"dense/kernel": np.ones((2, 3), np.float32)})
    with pytest.raises(StopRun) as info:
        monitor.evaluate_fn(1, arrays)
    assert (info.value.reason, info.value.hook) == ("b stops", "b")
    assert [name for name, *_ in log] == ["a", "b", "c", "d"]
    assert log[-1] == ("d", 1, ["comm/x", "server/mae"])  # a's metrics reach the later ones
    monitor.callbacks = monitor.callbacks[:1]
    record = monitor.evaluate_fn(2, arrays)
    assert isinstance(record, MetricRecord) and dict(record) == {"mae": 1.5}


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN-safe


def _comparable(run_dir: Path, name: str) -> pd.DataFrame:
    frame = pd.read_csv(run_dir / name)
    return frame.drop(columns=["seconds"], errors="ignore")


def test_state_round_trips_and_a_resumed_run_continues(folder):
    stopping = {
        "checkpoint_every": 1,
        "early_stopping_metric": "r2",
        "early_stopping_split": "server",
        "early_stopping_patience": 5,
    }
    short = fedglobal.simulate(_experiment(folder, "short", 2, server=stopping), quiet=True)
    ckpt = checkpoint.load(short.run_dir / checkpoint.CHECKPOINT)
    assert ckpt.round == 2
    saved = ckpt.monitor
    assert list(saved) == ["norm_rows", "round_rows", "counts", "hooks"]
    assert saved["hooks"]["EarlyStopping"]["best_round"] >= 1

    cfg = load_config(short.run_dir / "config.toml")
    fresh = RunMonitor(cfg, short.run_dir, HistoryRecorder(task="regression"), None)
    assert not _same(fresh.state_dict(), saved)
    fresh.load_state_dict(saved, ckpt.weights)
    assert _same(fresh.state_dict(), saved)
    (norms,) = [c for c in fresh.callbacks if type(c).__name__ == "WeightNorms"]
    for name, value in ckpt.weights.items():
        assert np.array_equal(norms.previous[name], value.astype(np.float64))

    # "whole" and "short" have names of one length: the messages (and their bytes) match
    whole = fedglobal.simulate(_experiment(folder, "whole", 3, server=stopping), quiet=True)
    resumed = fedglobal.simulate(
        _experiment(folder, "short", 3, server=stopping), resume=short.run_dir, quiet=True
    )
    for name in ("rounds.csv", "layer_norms.csv", "history.csv"):
        pd.testing.assert_frame_equal(
            _comparable(resumed.run_dir, name), _comparable(whole.run_dir, name)
        )
    a, b = (checkpoint.load(r.run_dir / checkpoint.CHECKPOINT).monitor for r in (resumed, whole))
    assert _same(a["hooks"], b["hooks"]) and _same(a["counts"], b["counts"])


def test_tensorboard_reads_a_rounds_scalars_as_tf_summary_scalar_writes_them(tmp_path):
    """One Summary a round (one op): TensorBoard's own reader must see each value under
    the scalars plugin, with the value and metadata ``tf.summary.scalar`` gives."""
    import tensorflow as tf
    from tensorboard.backend.event_processing import event_accumulator

    from fedglobal.server.callbacks.tensorboard import TensorBoardWriter

    writer = TensorBoardWriter(tmp_path / "ours")
    rows = [(1, "all", "test", "r2", 0.5), (1, "Asia/East", "train", "loss", 2.25)]
    writer.write_round(1, rows=rows, norms={"dense/kernel": (3.0, None)}, scalars={"x/y": 7.0})
    writer.write_round(2, rows=[(2, "all", "test", "r2", 0.75)])
    writer.close()
    reference = tf.summary.create_file_writer(str(tmp_path / "reference"))
    with reference.as_default(step=1):
        tf.summary.scalar("test/r2", 0.5)
    reference.close()

    def load(logdir):
        acc = event_accumulator.EventAccumulator(
            str(logdir), size_guidance={event_accumulator.TENSORS: 0}
        )
        acc.Reload()
        return acc

    ours, theirs = load(tmp_path / "ours" / "tensorboard"), load(tmp_path / "reference")
    assert set(ours.PluginTagToContent("scalars")) == {
        "test/r2",
        "regions/train/loss/Asia/East",
        "weight_norm/dense/kernel",
        "x/y",
    }
    assert [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in ours.Tensors("test/r2")] == [
        (1, 0.5),
        (2, 0.75),
    ]
    assert ours.SummaryMetadata("test/r2") == theirs.SummaryMetadata("test/r2")
    assert ours.Tensors("test/r2")[0].tensor_proto == theirs.Tensors("test/r2")[0].tensor_proto
