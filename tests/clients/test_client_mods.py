"""The ClientApp's clipping mod: clips only when the train config asks for it."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict

from clients.mods import optional_clipping_mod

pytestmark = pytest.mark.usefixtures("task_identity")


def _exchange(config: dict, message_type: str = "train") -> np.ndarray:
    sent = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    msg = Message(RecordDict({"arrays": sent, "config": ConfigRecord(config)}), 9, message_type)
    msg.metadata.__dict__["_message_id"] = "m1"

    def trained(message: Message, context: Context) -> Message:  # a client moving far
        new = ArrayRecord({"w": Array(np.array([3.0, 4.0, 0.0], np.float32))})
        return Message(RecordDict({"arrays": new}), reply_to=message)

    ctx = Context(run_id=5, node_id=9, node_config={}, state=RecordDict(), run_config={})
    reply = optional_clipping_mod(msg, ctx, trained)
    return reply.content["arrays"]["w"].numpy()


def test_clips_the_update_to_the_norm_in_the_config():
    np.testing.assert_allclose(_exchange({"clipping_norm": 1.0}), [0.6, 0.8, 0.0], rtol=1e-6)


def test_passes_through_without_the_key_or_outside_training():
    np.testing.assert_array_equal(_exchange({}), [3.0, 4.0, 0.0])
    np.testing.assert_array_equal(_exchange({"clipping_norm": 1.0}, "evaluate"), [3.0, 4.0, 0.0])
