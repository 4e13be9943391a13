"""Pins the Flower internals fedglobal relies on (fails loudly if flwr moves them).

The in-process engine builds Flower ``Message`` objects outside Flower's own
runtimes, which needs ``flwr.supercore.task_identity.TaskIdentity`` (a Flower
internal in 1.41). If a Flower upgrade moves or changes it, this test says so.
"""

from __future__ import annotations

import importlib.metadata

import pytest
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity


def test_flwr_version_is_in_the_pinned_range():
    version = tuple(int(p) for p in importlib.metadata.version("flwr").split(".")[:2])
    assert version == (1, 41), "fedglobal pins flwr 1.41.x: re-check TaskIdentity before bumping"


def test_message_needs_task_identity_and_uses_it():
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    try:
        TaskIdentity._run_id = TaskIdentity._node_id = TaskIdentity._task_id = None
        with pytest.raises(RuntimeError, match="TaskIdentity"):
            Message(RecordDict({"config": ConfigRecord({"a": 1})}), 7, "train")
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 11, 1, 3
        msg = Message(RecordDict({"config": ConfigRecord({"a": 1})}), 7, "train")
        assert (msg.metadata.run_id, msg.metadata.src_node_id, msg.metadata.dst_node_id) == (
            11,
            1,
            7,
        )
        assert msg.metadata.src_task_id == 3
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def test_inprocess_engine_restores_task_identity(tmp_path):
    """The engine sets the identity for its run and puts the previous one back."""
    import fedglobal

    before = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    cfg = {
        "experiment": {"rounds": 1, "output_dir": str(tmp_path)},
        "data": {
            "source": "synthetic:fedprox",
            "task": "classification",
            "num_regions": 3,
            "partition": "column",
        },
        "model": {"name": "logistic"},
        "strategy": {"min_available_clients": 2},
    }
    fedglobal.simulate(cfg, quiet=True)
    assert (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id) == before
