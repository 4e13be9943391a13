"""The ServerApp's Grid wrapper, over the real in-process Grid and a real Flower ClientApp."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fedglobal.engines.inprocess import InProcessGrid
from fedglobal.errors import RunError
from fedglobal.server.grid import ServerGrid

app = ClientApp()
FAILING = {"asia"}


@app.train()
def train(message: Message, context) -> Message:
    region = context.node_config["region"]
    if region in FAILING:
        raise ValueError("disk full")
    content = RecordDict(
        {
            "metrics": MetricRecord({"num-examples": 1}),
            "meta": ConfigRecord({"region": region, "round": 1}),
        }
    )
    return Message(content, reply_to=message)


@pytest.fixture
def identity():
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, SUPERLINK_NODE_ID, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _round(grid, nodes) -> list[Message]:
    messages = [
        Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), n, "train")
        for n in nodes
    ]
    return list(grid.send_and_receive(messages, timeout=5))


def test_replies_are_sorted_by_region_and_failures_named_by_region(identity):
    regions = ["europe", "africa", "asia", "oceania"]
    grid = ServerGrid(InProcessGrid(app, regions, run_id=5))
    nodes = sorted(grid.get_node_ids())
    FAILING.clear()
    _round(grid, nodes)  # every region replies once: the grid learns who is where
    FAILING.add("asia")
    replies = _round(grid, list(reversed(nodes)))
    ok = [r.content["meta"]["region"] for r in replies if not r.has_error()]
    assert ok == ["africa", "europe", "oceania"]  # sorted, whatever order they were sent
    (error,) = [r for r in replies if r.has_error()]
    assert replies[-1] is error
    assert error.error.reason.startswith("region asia: ValueError: disk full")
    assert error.metadata.src_node_id == nodes[regions.index("asia")]


def test_fewer_replies_than_the_minimum_stop_the_round(identity):
    FAILING.clear()
    FAILING.update({"asia", "europe"})
    grid = ServerGrid(
        InProcessGrid(app, ["europe", "africa", "asia"], run_id=5),
        minimum={"train": 2}.get,
    )
    with pytest.raises(RunError, match=r"round 1 train: only 1 of 3 regions replied") as info:
        _round(grid, sorted(grid.get_node_ids()))
    assert "minimum of 2" in str(info.value) and "region asia" in str(info.value)
    FAILING.clear()
