"""What crosses between server and clients on the in-process engine: no rows, no local layers.

A recording Grid (a subclass of the engine's own ``InProcessGrid``, put in its
place for the run) keeps every message the ServerApp sends and every reply it
receives in a whole run: the statistics query, every round's train and
evaluate. Then:

- every array in any ArrayRecord is named like a model variable and has its
  shape: no array has a sample dimension;
- replies carry scalar metrics only (counts, sums, sums of squares), and
  string lists only of feature names and category labels;
- no value of any client row (feature or target) appears in any reply;
- with FedPer, a reply's head (the layers kept local) is the server's own
  value sent that round: a region's trained head never reaches the server.

Checkpoints are off: an in-process checkpoint collects client state (local
layers) on purpose, where client and server share the machine (docs/results.md).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord

import fedglobal
from fedglobal.engines import inprocess
from fedglobal.protocol import BOOKKEEPING_KEYS

pytestmark = pytest.mark.slow


class RecordingGrid(inprocess.InProcessGrid):
    """The in-process Grid, keeping a copy of every message pushed and every reply pulled."""

    sent: ClassVar[list[Message]] = []
    received: ClassVar[list[Message]] = []

    def push_messages(self, messages: Any) -> Any:
        messages = list(messages)
        ids = super().push_messages(messages)
        RecordingGrid.sent.extend(messages)
        return ids

    def pull_messages(self, message_ids: Any) -> Any:
        replies = list(super().pull_messages(message_ids))
        RecordingGrid.received.extend(replies)
        return replies


def _record_run(monkeypatch, raw: dict) -> tuple[Any, list[Message], list[Message]]:
    RecordingGrid.sent, RecordingGrid.received = [], []
    monkeypatch.setattr(inprocess, "InProcessGrid", RecordingGrid)
    result = fedglobal.simulate(raw, quiet=True)
    return result, list(RecordingGrid.sent), list(RecordingGrid.received)


def _raw(tiny: dict, tmp_path, strategy: dict) -> dict:
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"]["output_dir"] = str(tmp_path / "runs")
    raw["strategy"] = {**raw["strategy"], **strategy}
    raw["server"] = {"checkpoint_every": 0}
    raw["output"] = {"tensorboard": False, "plots": False}
    return raw


def _model_shapes(result: Any) -> dict[str, tuple[int, ...]]:
    return {v.path: tuple(v.shape) for v in result.model.weights}


def _check_no_rows_cross(
    rows: pd.DataFrame, shapes: dict[str, tuple[int, ...]], sent: list, received: list
) -> None:
    smallest_region = int(rows.groupby("region").size().min())
    row_values = set(rows[["x1", "x2", "y"]].to_numpy(np.float64).ravel().tolist())
    row_values32 = {float(np.float32(v)) for v in row_values}
    allowed_strings = set(rows.columns) | set(rows.region)
    assert sent and received and len(received) == len(sent)
    for message in [*sent, *received]:
        if not message.has_content():
            continue
        for name, record in message.content.items():
            if isinstance(record, ArrayRecord):
                for key, array in record.items():
                    assert key in shapes, f"{name}/{key}: not a model variable"
                    assert tuple(array.shape) == shapes[key], f"{key}: {array.shape}"
    for reply in received:
        assert not reply.has_error(), reply.error.reason
        for name, record in reply.content.items():
            if isinstance(record, MetricRecord):
                for key, value in record.items():
                    assert isinstance(value, int | float), f"{name}/{key} is not a scalar"
                    assert float(value) not in row_values, f"{name}/{key} = a row's value"
            elif isinstance(record, ConfigRecord):
                for key, value in record.items():
                    assert not isinstance(value, bytes), f"{name}/{key}: bytes"
                    items = value if isinstance(value, list) else [value]
                    assert len(items) < smallest_region, f"{name}/{key}: {len(items)} items"
                    for item in items:
                        if key in BOOKKEEPING_KEYS:  # where and how it trained: no data
                            assert isinstance(item, str | int), f"{name}/{key} = {item!r}"
                            assert str(item) not in set(rows.region), f"{name}/{key}"
                        elif isinstance(item, str):
                            assert item in allowed_strings, f"{name}/{key} = {item!r}"
                        else:
                            assert float(item) not in row_values, f"{name}/{key} = a row's value"
            elif isinstance(record, ArrayRecord):
                for key, array in record.items():
                    values = set(np.asarray(array.numpy(), np.float64).ravel().tolist())
                    assert not values & (row_values | row_values32), f"{key} holds row values"
            else:
                raise AssertionError(f"unexpected record {name}: {type(record).__name__}")


def test_fedavg_run_sends_and_receives_no_rows(tiny, tmp_path, monkeypatch):
    result, sent, received = _record_run(monkeypatch, _raw(tiny, tmp_path, {"name": "fedavg"}))
    kinds = {str(m.metadata.message_type) for m in sent}
    assert {"query", "train", "evaluate"} <= kinds
    _check_no_rows_cross(tiny["rows"], _model_shapes(result), sent, received)


def test_fedper_local_layers_never_reach_the_server(tiny, tmp_path, monkeypatch):
    result, sent, received = _record_run(monkeypatch, _raw(tiny, tmp_path, {"name": "fedper"}))
    shapes = _model_shapes(result)
    _check_no_rows_cross(tiny["rows"], shapes, sent, received)
    by_id = {m.metadata.message_id: m for m in sent}
    checked = 0
    for reply in received:
        request = by_id[reply.metadata.reply_to_message_id]
        if request.metadata.message_type != "train":
            continue
        local = list(request.content["config"]["local-layers"])
        assert local and set(local) < set(shapes)
        got, server = reply.content["arrays"], request.content["arrays"]
        for name in local:  # the server's own value comes back, not the region's head
            np.testing.assert_array_equal(got[name].numpy(), server[name].numpy())
        shared = [n for n in shapes if n not in local]
        assert any(  # the shared layers did train (so the check above can fail)
            not np.array_equal(got[n].numpy(), server[n].numpy()) for n in shared
        )
        checked += 1
    assert checked == 3 * tiny["raw"]["experiment"]["rounds"]
