"""The ServerApp's view of an engine's Grid: bounded waits, ordered replies, named failures.

The ServerApp wraps whatever Grid the engine hands it (the in-process Grid,
Flower's Simulation or Deployment runtime) in a :class:`ServerGrid`. It uses
only the ``Grid`` API every engine implements (``push_messages`` /
``pull_messages``), so no engine is special-cased:

- **Bounded waits.** ``send_and_receive`` polls for replies (every 0.1-0.5 s)
  until all arrived or ``timeout`` passed. A node that did not reply in time
  gets an error reply (``no reply within Ns``), so the strategy records it as
  a failure and aggregates the others, instead of the round hanging.
- **Named failures.** Error replies (a ClientApp exception, or Flower's
  ``NODE_UNAVAILABLE`` for a SuperNode that died, which Flower sends from the
  SuperLink's node id) are re-addressed from the node they concern, and their
  reason names its region, learnt from the node's earlier replies.
- **A minimum.** If fewer replies than the strategy's minimum
  (``min_train_nodes`` / ``min_evaluate_nodes``) succeed, the round cannot
  complete: :class:`~fedglobal.errors.RunError` says how many regions were
  asked, how many replied and which failed.
- **Retries.** With ``retries`` (``[server] round_retries``), a stage with
  fewer successful replies than its minimum is re-sent to the regions that
  failed (the same regions, not a new sample; their config carries
  ``attempt`` = 1, 2, ...); the replies that succeeded are kept. Each retry is
  recorded in :attr:`ServerGrid.retried`. Retried messages are not counted in
  rounds.csv's bytes.
- **Reproducible order.** Replies are returned sorted by region (then node),
  whichever order the engine delivered them in, so float aggregation is
  bitwise identical across engines and runs (DESIGN decision 8).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ConfigRecord, Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fedglobal.engines import placement
from fedglobal.errors import RunError
from fedglobal.protocol import META_KEY, REGION_KEY, SERVER_ROUND_KEY

log = logging.getLogger(__name__)

NO_REPLY = "no reply within"
#: Config key of a re-sent message's attempt number (1 = first retry).
ATTEMPT_KEY = "attempt"


class DelegatingGrid(Grid):
    """A Grid that hands every call of Flower's Grid interface to the grid it wraps.

    The server's Grid wrappers (:class:`ServerGrid`, :class:`fedglobal.server.comm.CountingGrid`,
    :class:`fedglobal.geo.grid.ClockedGrid`) subclass it and override only what they add.

    Args:
        grid: the wrapped grid (an engine's, or another wrapper).
    """

    def __init__(self, grid: Grid) -> None:
        self._grid = grid

    def __getattr__(self, name: str) -> Any:  # anything else the wrapped grid offers
        if name == "_grid":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._grid, name)

    def set_run(self, run: Run) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Run:
        return self._grid.run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


class ServerGrid(DelegatingGrid):
    """Wraps an engine's Grid (see the module docstring)."""

    def __init__(
        self,
        grid: Grid,
        *,
        minimum: Callable[[str], int] | None = None,
        retries: int = 0,
        poll_interval: float = 0.1,
        max_poll_interval: float = 0.5,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        super().__init__(grid)
        self._minimum = minimum
        self._retries = retries
        #: One entry per retry: round, stage, attempt, regions re-sent, their reasons.
        self.retried: list[dict[str, Any]] = []
        self._poll = poll_interval
        self._max_poll = max_poll_interval
        self.regions: dict[int, str] = {}
        #: region -> (node id, where its latest train reply ran: :mod:`fedglobal.engines.placement`)
        self.trained_at: dict[str, tuple[int, dict]] = {}

    # ---- send and receive --------------------------------------------------------------

    def region_of(self, node_id: int) -> str:
        """The node's region if it ever replied, else ``node <id>``."""
        return self.regions.get(node_id, f"node {node_id}")

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        if not messages:
            return []
        replies = self._exchange(messages, timeout)
        attempt = 0
        while attempt < self._retries and self._short(messages, replies):
            attempt += 1
            failed = [i for i, r in enumerate(replies) if r.has_error()]
            self._note_retry(messages[0], attempt, [replies[i] for i in failed])
            again = self._exchange([self._resend(messages[i], attempt) for i in failed], timeout)
            for i, reply in zip(failed, again, strict=True):
                replies[i] = reply
        replies.sort(key=self._order)
        self._check_minimum(messages, replies, attempt)
        return replies

    def _exchange(self, messages: list[Message], timeout: float | None) -> list[Message]:
        """One reply per message, in their order (error replies for the missing ones)."""
        ids = list(self._grid.push_messages(messages))
        sent: dict[str, Message] = {}
        for message, message_id in zip(messages, ids, strict=False):
            if message_id:
                sent[str(message_id)] = message
        received = self._collect(sent, timeout)
        by_message = {id(m): i for i, m in sent.items()}
        replies = []
        for message in messages:
            message_id = by_message.get(id(message))
            reply = None if message_id is None else received.get(message_id)
            if message_id is None:
                replies.append(self._error(message, ErrorCode.UNKNOWN, "could not be sent"))
            elif reply is None:
                replies.append(self._error(message, ErrorCode.UNKNOWN, f"{NO_REPLY} {timeout:g}s"))
            elif reply.has_error():
                replies.append(self._error(message, reply.error.code, reply.error.reason))
            else:
                self._learn(reply)
                replies.append(reply)
        return replies

    def _short(self, messages: list[Message], replies: list[Message]) -> bool:
        """Whether fewer replies succeeded than the stage's minimum."""
        if self._minimum is None:
            return False
        needed = int(self._minimum(messages[0].metadata.message_type) or 0)
        return sum(not r.has_error() for r in replies) < needed

    def _resend(self, message: Message, attempt: int) -> Message:
        """A new message with ``message``'s content, its config carrying ``attempt``."""
        content = RecordDict(dict(message.content.items()))
        config = content.get("config")
        if isinstance(config, ConfigRecord):
            content["config"] = ConfigRecord({**dict(config), ATTEMPT_KEY: attempt})
        meta = message.metadata
        return self._grid.create_message(
            content, meta.message_type, meta.dst_node_id, meta.group_id, meta.ttl
        )

    def _note_retry(self, first: Message, attempt: int, failed: list[Message]) -> None:
        entry = {
            "round": _round_of(first),
            "stage": first.metadata.message_type,
            "attempt": attempt,
            "regions": [self.region_of(r.metadata.src_node_id) for r in failed],
            "reasons": [r.error.reason for r in failed],
        }
        self.retried.append(entry)
        log.warning(
            "round %s %s: too few replies; retry %d of %d re-sends to %s",
            entry["round"],
            entry["stage"],
            attempt,
            self._retries,
            ", ".join(entry["regions"]),
        )

    def _collect(self, sent: dict[str, Message], timeout: float | None) -> dict[str, Message]:
        deadline = None if timeout is None else time.monotonic() + timeout
        pending = set(sent)
        received: dict[str, Message] = {}
        interval = self._poll
        while pending:
            for reply in self._grid.pull_messages([i for i in sent if i in pending]):
                key = reply.metadata.reply_to_message_id
                if key in pending:
                    pending.discard(key)
                    received[key] = reply
            if not pending:
                break
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(interval, left))
            else:
                time.sleep(interval)
            interval = min(interval * 1.5, self._max_poll)
        return received

    def _learn(self, reply: Message) -> None:
        meta = reply.content.get(META_KEY)
        if isinstance(meta, ConfigRecord) and isinstance(meta.get(REGION_KEY), str):
            node, region = reply.metadata.src_node_id, str(meta[REGION_KEY])
            self.regions[node] = region
            if reply.metadata.message_type == "train" and placement.PID_KEY in meta:
                self.trained_at[region] = (node, {k: meta[k] for k in placement.KEYS if k in meta})

    def placement(self, engine: str) -> dict[str, dict]:
        """``summary.json``'s ``placement``: region -> where it last trained."""
        return {
            region: placement.describe(info, engine, node)
            for region, (node, info) in sorted(self.trained_at.items())
        }

    def _error(self, message: Message, code: int, reason: str) -> Message:
        """An error reply from ``message``'s destination, naming its region."""
        node = message.metadata.dst_node_id
        label = f"region {self.regions[node]}" if node in self.regions else f"node {node}"
        if not reason.startswith("region "):
            reason = f"{label}: {reason}"
        return error_reply(message, code, reason)

    def _order(self, reply: Message) -> tuple[int, str, int]:
        node = reply.metadata.src_node_id
        return (int(reply.has_error()), self.regions.get(node, ""), node)

    def _check_minimum(
        self, messages: list[Message], replies: list[Message], retries: int = 0
    ) -> None:
        if self._minimum is None:
            return
        stage = messages[0].metadata.message_type
        needed = int(self._minimum(stage) or 0)
        ok = sum(not r.has_error() for r in replies)
        if ok >= needed:
            return
        failed = "; ".join(r.error.reason for r in replies if r.has_error())
        server_round = _round_of(messages[0])
        where = f"round {server_round} {stage}" if server_round is not None else stage
        tried = f" (after {retries} retries, [server] round_retries)" if retries else ""
        raise RunError(
            f"{where}: only {ok} of {len(replies)} regions replied{tried}, fewer than the "
            f"configured minimum of {needed}; failed: {failed}"
        )


def error_reply(message: Message, code: int, reason: str) -> Message:
    """An error reply to ``message`` (sent by the server), as if its destination had failed.

    Its id is the message's id with ``:error``: Flower's ``Metadata`` has no public
    setter for ``message_id``, which a reply built on the server has to carry.
    """
    reply = Message(Error(code=int(code), reason=reason), reply_to=message)
    reply.metadata.__dict__["_message_id"] = f"{message.metadata.message_id}:error"
    return reply


def _round_of(message: Message) -> Any:
    if not message.has_content():
        return None
    config = message.content.get("config")
    return config.get(SERVER_ROUND_KEY) if isinstance(config, ConfigRecord) else None
