"""fedglobal.server.comm.DecodingGrid: compressed train replies reach the strategy decoded."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.supercore.task_identity import TaskIdentity

from fedglobal.engines.inprocess import InProcessGrid
from fedglobal.protocol import from_record, to_record
from fedglobal.server.comm import DecodingGrid
from strategies import compression

app = ClientApp()
CODEC = {"name": "float16"}  # what the client claims its codec is ("none": no compression)


@app.train()
def train(message: Message, context) -> Message:
    sent = from_record(message.content["arrays"])
    local = {name: value + 0.5 for name, value in sent.items()}
    content = RecordDict({"metrics": MetricRecord({"num-examples": 3})})
    if CODEC["name"] == "none":
        content["arrays"] = to_record(local)
    else:
        wire, _ = compression.compress(local, sent, "float16")
        content["arrays"] = to_record(wire)
        content[compression.CODEC_KEY] = ConfigRecord({"codec": CODEC["name"]})
    return Message(content, reply_to=message)


@pytest.fixture
def grid():
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 5, SUPERLINK_NODE_ID, 1
    yield DecodingGrid(InProcessGrid(app, ["europe"], run_id=5))
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


WEIGHTS = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}


def _train(grid) -> tuple[Message, Message]:
    (node,) = grid.get_node_ids()  # the rest of Flower's Grid interface is delegated
    content = RecordDict({"arrays": to_record(WEIGHTS), "config": ConfigRecord({"x": 1})})
    sent = Message(content, node, MessageType.TRAIN)
    (reply,) = grid.send_and_receive([sent], timeout=5)
    return sent, reply


@pytest.mark.parametrize("codec", ["float16", "none"])
def test_a_reply_arrives_as_full_weights(grid, codec):
    CODEC["name"] = codec
    _, reply = _train(grid)
    assert not reply.has_error() and compression.CODEC_KEY not in reply.content
    arrays = reply.content["arrays"]
    assert isinstance(arrays, ArrayRecord)
    np.testing.assert_array_equal(arrays["w"].numpy(), WEIGHTS["w"] + 0.5)


def test_an_undecodable_reply_becomes_an_error_reply_from_its_node(grid):
    CODEC["name"] = "zip"
    sent, reply = _train(grid)
    assert reply.has_error()
    assert "cannot decode the compressed update" in reply.error.reason
    assert "unknown compression codec" in reply.error.reason
    assert reply.metadata.src_node_id == sent.metadata.dst_node_id
    assert reply.metadata.reply_to_message_id == sent.metadata.message_id
