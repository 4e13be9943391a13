"""ClientApp handlers that save and restore a node's state (checkpoint and resume).

A regional client keeps state between rounds in its Flower ``context.state``:
its own trained copy of local and interval-skipped layers (layerwise
strategies), its compression error-feedback residual, SCAFFOLD's control
variate ``c_i`` (:mod:`clients.scaffold`) and Ditto's personal model
(:mod:`clients.ditto`). A resumed run must
start with the same state for its rounds to equal the uninterrupted run's, so
the server's checkpoint (:mod:`fedglobal.run.checkpoint`) asks each region for it:

- ``query.client_state``: reply with every record of ``context.state`` (keys
  prefixed ``state/``) and the ``meta`` record naming the region;
- ``query.restore_client_state``: replace ``context.state`` by the records of
  the message (same prefix) and reply with ``meta``.

The state is model weights the region already sends every round; no data rows.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict

from clients.node import experiment_from, meta_record, node_region
from fedglobal.protocol import META_KEY, RESTORE_QUERY, STATE_PREFIX, STATE_QUERY

__all__ = ["RESTORE_QUERY", "STATE_PREFIX", "STATE_QUERY", "register"]


def _meta(message: Message, context: Context) -> ConfigRecord:
    config = message.content["config"]
    region, _ = node_region(context, experiment_from(config))
    return meta_record(region, config)


def client_state(message: Message, context: Context) -> Message:
    """Reply with this node's ``context.state`` records and its region."""
    content = RecordDict({META_KEY: _meta(message, context)})
    for key, record in context.state.items():
        content[f"{STATE_PREFIX}{key}"] = record
    return Message(content, reply_to=message)


def restore_client_state(message: Message, context: Context) -> Message:
    """Replace this node's ``context.state`` by the message's state records."""
    meta = _meta(message, context)
    for key in list(context.state.keys()):
        del context.state[key]
    for key, record in message.content.items():
        if key.startswith(STATE_PREFIX):
            context.state[key[len(STATE_PREFIX) :]] = record
    return Message(RecordDict({META_KEY: meta}), reply_to=message)


def register(app: object) -> None:
    """Register both handlers on a ``flwr.clientapp.ClientApp``."""
    app.query(STATE_QUERY.split(".", 1)[1])(client_state)  # type: ignore[attr-defined]
    app.query(RESTORE_QUERY.split(".", 1)[1])(restore_client_state)  # type: ignore[attr-defined]
