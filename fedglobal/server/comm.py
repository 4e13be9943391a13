"""Bytes communicated: a Grid wrapper that counts what every message carries.

:class:`CountingGrid` wraps any engine's Grid and delegates every call to it.
It adds up ``count_bytes()`` of the records (arrays, metrics, configs) of the
messages it sends and of the replies it receives, so the numbers are the same
on every engine. Error replies carry no records and count 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedglobal.errors import RunError
from fedglobal.protocol import BOOKKEEPING_KEYS, META_KEY, TRAINED_BY_KEY, WHY_KEY
from fedglobal.server.grid import DelegatingGrid, error_reply
from strategies.compression import ARRAYS_KEY, CODEC_KEY, decode_reply

__all__ = ["CommCounts", "CountingGrid", "TrainingPaths", "message_bytes"]


@dataclass
class CommCounts:
    """Bytes sent and received, in total and of model arrays only."""

    sent: int = 0
    received: int = 0
    sent_arrays: int = 0
    received_arrays: int = 0
    messages_sent: int = 0
    messages_received: int = 0

    def copy(self) -> CommCounts:
        return CommCounts(**vars(self))

    def minus(self, other: CommCounts) -> CommCounts:
        """The counts since ``other`` was taken."""
        return CommCounts(**{k: v - getattr(other, k) for k, v in vars(self).items()})


def _config_bytes(record: ConfigRecord) -> int:
    """``record.count_bytes()``, also for empty lists (Flower 1.41 raises IndexError on them).

    An empty list counts as its key only (e.g. ``local-layers = []`` on a round
    where a layerwise strategy keeps no layer local).

    The simulator's bookkeeping (``fedglobal.protocol.BOOKKEEPING_KEYS``: where and
    how a region trained) is not counted: it differs by engine, and sizes (hence
    rounds.csv and the simulated clock) must not.
    """
    empty = [k for k, v in record.items() if isinstance(v, list) and not v]
    if not empty and not BOOKKEEPING_KEYS.intersection(record.keys()):
        return record.count_bytes()
    rest = {k: v for k, v in record.items() if k not in empty and k not in BOOKKEEPING_KEYS}
    return (ConfigRecord(rest).count_bytes() if rest else 0) + sum(len(k) for k in empty)


def _content_bytes(content: RecordDict) -> tuple[int, int]:
    arrays = sum(r.count_bytes() for r in content.array_records.values())
    other = sum(r.count_bytes() for r in content.metric_records.values())
    other += sum(_config_bytes(r) for r in content.config_records.values())
    return arrays + other, arrays


def message_bytes(message: Message) -> tuple[int, int]:
    """``(all record bytes, array record bytes)`` of a message (0, 0 for an error)."""
    if message.has_error() or not message.has_content():
        return 0, 0
    return _content_bytes(message.content)


@dataclass
class TrainingPaths:
    """Which path trained the train replies received (``meta`` ``trained-by``), and why not
    the cohort path (``meta`` ``why``): counts since the last :meth:`take`."""

    paths: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)

    def add(self, reply: Message) -> None:
        if reply.has_error() or not reply.has_content() or META_KEY not in reply.content:
            return
        meta = reply.content[META_KEY]
        if TRAINED_BY_KEY not in meta:
            return
        self.paths[str(meta[TRAINED_BY_KEY])] += 1
        if str(meta.get(WHY_KEY, "")):
            self.reasons[str(meta[WHY_KEY])] += 1

    def take(self) -> tuple[str, str]:
        """``(trained_by, why)`` of the replies since the last call, then reset.

        ``trained_by`` is ``cohort``, ``keras-fit``, ``mixed`` (both, as
        ``cohort:N keras-fit:M``) or empty (no train reply); ``why`` is the most
        frequent reason a region was not trained in a cohort.
        """
        paths, reasons = self.paths, self.reasons
        self.paths, self.reasons = Counter(), Counter()
        if len(paths) > 1:
            trained_by = " ".join(f"{k}:{v}" for k, v in sorted(paths.items()))
        else:
            trained_by = next(iter(paths), "")
        why = reasons.most_common(1)[0][0] if reasons else ""
        return trained_by, why


class CountingGrid(DelegatingGrid):
    """Delegates to ``grid`` and counts the bytes of messages sent and received."""

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self.counts = CommCounts()
        self.paths = TrainingPaths()
        #: Bytes of each node's reply in the latest ``send_and_receive`` (the clock reads it).
        self.last_reply_bytes: dict[int, int] = {}

    def _sent(self, messages: list[Message]) -> None:
        for message in messages:
            total, arrays = message_bytes(message)
            self.counts.sent += total
            self.counts.sent_arrays += arrays
            self.counts.messages_sent += 1

    def _received(self, replies: list[Message]) -> list[Message]:
        for reply in replies:
            total, arrays = message_bytes(reply)
            self.last_reply_bytes[reply.metadata.src_node_id] = total
            self.counts.received += total
            self.counts.received_arrays += arrays
            self.counts.messages_received += 1
            self.paths.add(reply)
        return replies

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._sent(messages)  # before sending: an engine may consume the content
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._received(list(self._grid.pull_messages(message_ids)))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self._sent(messages)
        self.last_reply_bytes = {}
        return self._received(list(self._grid.send_and_receive(messages, timeout=timeout)))


class DecodingGrid(DelegatingGrid):
    """Train replies with compressed updates reach the strategy decoded (client.compression).

    It keeps, per node, the last train message sent to it (a reference, not a copy)
    and turns a reply carrying a ``compression`` ConfigRecord into an ordinary reply
    with the node's full weights, ``w_global + decode(update)``
    (:func:`strategies.compression.decode_reply`). Replies without it pass through
    untouched, so the wrapper costs nothing when no client compresses. A reply that
    cannot be decoded becomes an error reply. It sits inside the byte counting, so
    the counted bytes are the compressed ones.
    """

    def __init__(self, grid: Grid) -> None:
        super().__init__(grid)
        self._sent: dict[int, Message] = {}

    def _remember(self, messages: list[Message]) -> None:
        for message in messages:
            if message.metadata.message_type == MessageType.TRAIN and message.has_content():
                if isinstance(message.content.get(ARRAYS_KEY), ArrayRecord):
                    self._sent[message.metadata.dst_node_id] = message

    def _decode(self, replies: Iterable[Message]) -> list[Message]:
        out = []
        for reply in replies:
            if reply.has_error() or not reply.has_content() or CODEC_KEY not in reply.content:
                out.append(reply)
                continue
            node = reply.metadata.src_node_id
            if node not in self._sent:
                raise RunError(f"node {node} sent a compressed update but no train message")
            sent = self._sent[node]
            try:
                reply.content = decode_reply(reply.content, sent.content[ARRAYS_KEY])
            except Exception as exc:  # a malformed reply: an error reply, like a failure
                reason = f"cannot decode the compressed update: {exc}"
                reply = error_reply(sent, ErrorCode.UNKNOWN, reason)
            out.append(reply)
        return out

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        self._remember(messages)
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._decode(self._grid.pull_messages(message_ids))

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        self._remember(messages)
        return self._decode(self._grid.send_and_receive(messages, timeout=timeout))
