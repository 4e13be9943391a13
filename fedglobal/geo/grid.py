"""The clock in the ServerApp: a view of the Grid for each round's train stage.

:class:`GeoRounds` holds the :class:`~fedglobal.geo.clock.SimClock` and hands
the round loop (:func:`fedglobal.server.rounds.run_rounds`) a :class:`ClockedGrid`
for each round's ``configure_train`` and train ``send_and_receive``. It sits
above the engine's Grid, where the server sends and receives, so it is the
same on every engine:

- ``get_node_ids`` lists only the regions inside their availability window at
  the round's simulated start; when fewer than the strategy needs are, the
  clock first skips ahead (:meth:`SimClock.wait_for`).
- ``deadline``: each train message's local steps are cut to those that fit
  before the deadline, sent as the existing config key ``local-steps`` (the
  key ``[strategy] stragglers`` uses), so FedProx keeps the partial work.
- ``overcommit``: ``ceil(overcommit * m) - m`` more available regions, drawn
  with ``numpy.random.default_rng([seed, round, OVERCOMMIT_STREAM])`` in region
  order, are sent the same instruction; the first ``m`` replies to arrive are
  returned to the strategy, the others are not.
- Every train round is then timed from the real serialised sizes of the
  messages (:func:`fedglobal.server.comm.message_bytes`, the bytes rounds.csv
  counts) and the steps each region was asked for.

Evaluation messages pass through untouched and take no simulated time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from fedglobal.errors import RunError
from fedglobal.geo.clock import AvailabilityError, SimClock, Work
from fedglobal.server.comm import message_bytes
from fedglobal.server.grid import DelegatingGrid

__all__ = ["LOCAL_STEPS_KEY", "OVERCOMMIT_STREAM", "ClockedGrid", "GeoRounds"]

#: The train config key limiting a region's local steps (strategies.fedavg.LOCAL_STEPS_KEY).
LOCAL_STEPS_KEY = "local-steps"
#: Random stream of the overcommit draw (strategies.sampling uses 0-2).
OVERCOMMIT_STREAM = 3
_CONFIG = "config"


class GeoRounds:
    """The clock's hook into the round loop (see the module docstring).

    Args:
        clock: the simulated clock.
        region_of: node id -> region (the ServerGrid's).
        full_steps: region -> local steps of a full round.
        needed: regions a round needs (the strategy's minimum available / train nodes).
        seed: the experiment's seed.
        reply_bytes: the byte sizes of the latest replies by node (the CountingGrid's).
    """

    def __init__(
        self,
        clock: SimClock,
        *,
        region_of: Callable[[int], str],
        full_steps: Mapping[str, int],
        needed: int,
        seed: int,
        reply_bytes: Callable[[], Mapping[int, int]],
    ) -> None:
        self.clock = clock
        self.region_of = region_of
        self.full_steps = dict(full_steps)
        self.needed = int(needed)
        self.seed = int(seed)
        self.reply_bytes = reply_bytes
        #: The server's ``(lat, lon, source)``, for summary.json.
        self.server: tuple[float, float, str] = (*clock.server, "")

    def for_round(self, server_round: int, grid: Grid) -> ClockedGrid:
        """The grid ``configure_train`` and the train exchange of ``server_round`` use."""
        return ClockedGrid(self, server_round, grid)

    def state_dict(self) -> dict[str, Any]:
        """The clock's state (for checkpoints)."""
        return self.clock.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.clock.load_state_dict(state)


class ClockedGrid(DelegatingGrid):
    """One round's view of ``grid`` under the clock (see the module docstring)."""

    def __init__(self, rounds: GeoRounds, server_round: int, grid: Grid) -> None:
        super().__init__(grid)
        self._rounds = rounds
        self._round = server_round
        self._available: list[int] | None = None

    # ---- availability --------------------------------------------------------------------
    def get_node_ids(self) -> Iterable[int]:
        """The nodes whose regions are available at the round's simulated start."""
        if self._available is None:
            nodes = sorted(self._grid.get_node_ids())
            by_region = {self._rounds.region_of(n): n for n in nodes}
            known = [r for r in by_region if r in self._rounds.clock.places]
            try:
                open_now = set(self._rounds.clock.wait_for(known, self._rounds.needed))
            except AvailabilityError as exc:
                raise RunError(f"[geo] round {self._round}: {exc}") from None
            self._available = [n for n in nodes if self._rounds.region_of(n) in open_now]
        return list(self._available)

    # ---- the train exchange --------------------------------------------------------------
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN]
        if not train or len(train) != len(messages):
            return self._grid.send_and_receive(messages, timeout=timeout)
        rounds, clock = self._rounds, self._rounds.clock
        wanted = len(messages)
        if clock.policy == "overcommit":
            messages += self._extra(messages)
        if clock.policy == "deadline":
            messages = [self._within_deadline(m) for m in messages]
        sent = {m.metadata.dst_node_id: m for m in messages}
        replies = list(self._grid.send_and_receive(messages, timeout=timeout))
        sizes = dict(rounds.reply_bytes())
        work = []
        for node, message in sent.items():
            region = rounds.region_of(node)
            full = rounds.full_steps.get(region, 1)
            steps = _local_steps(message) or full
            reply = next((r for r in replies if r.metadata.src_node_id == node), None)
            ok = reply is not None and not reply.has_error()
            work.append(
                Work(
                    region=region,
                    download_bytes=message_bytes(message)[0],
                    upload_bytes=sizes.get(node, 0) if ok else None,
                    steps=steps,
                    partial=steps < full,
                )
            )
        clock.close_round(self._round, work, keep=wanted)
        kept = {r.region for r in clock.regions if r.round == self._round and r.kept}
        return [
            r for r in replies if r.has_error() or rounds.region_of(r.metadata.src_node_id) in kept
        ]

    def _extra(self, messages: list[Message]) -> list[Message]:
        """Overcommit: the same instruction for ``ceil(f * m) - m`` more available regions."""
        rounds = self._rounds
        chosen = {m.metadata.dst_node_id for m in messages}
        spare = sorted(
            (n for n in self.get_node_ids() if n not in chosen),
            key=lambda n: (rounds.region_of(n), n),
        )
        k = min(math.ceil(rounds.clock.overcommit * len(messages)) - len(messages), len(spare))
        if k <= 0:
            return []
        rng = np.random.default_rng([rounds.seed, self._round, OVERCOMMIT_STREAM])
        picked = sorted(rng.choice(len(spare), size=k, replace=False).tolist())
        template = next((m for m in messages if _local_steps(m) is None), messages[0])
        content = _with_steps(template.content, None)
        return [
            Message(content=content, message_type=MessageType.TRAIN, dst_node_id=spare[i])
            for i in picked
        ]

    def _within_deadline(self, message: Message) -> Message:
        """``message`` with its local steps cut to those that fit before the deadline."""
        rounds = self._rounds
        region = rounds.region_of(message.metadata.dst_node_id)
        steps = _local_steps(message) or rounds.full_steps.get(region, 1)
        # The reply's size is not known before it is sent: estimate it by the message's
        # (the same arrays, and a config that outweighs the reply's metrics), so that a
        # region cut to fit is not late by the few bytes its metrics add.
        total = message_bytes(message)[0]
        fit = rounds.clock.steps_within(region, total, total, steps)
        if fit == steps or fit == 0:  # all fit, or not even one: sent as it is (late)
            return message
        return Message(
            content=_with_steps(message.content, fit),
            message_type=MessageType.TRAIN,
            dst_node_id=message.metadata.dst_node_id,
        )


def _local_steps(message: Message) -> int | None:
    config = message.content.get(_CONFIG)
    if isinstance(config, ConfigRecord) and LOCAL_STEPS_KEY in config:
        return int(config[LOCAL_STEPS_KEY])
    return None


def _with_steps(content: RecordDict, steps: int | None) -> RecordDict:
    """A copy of ``content`` whose config has ``local-steps = steps`` (None: removed)."""
    out = RecordDict(dict(content.items()))
    config = content.get(_CONFIG)
    if isinstance(config, ConfigRecord):
        values = {k: v for k, v in config.items() if k != LOCAL_STEPS_KEY}
        if steps is not None:
            values[LOCAL_STEPS_KEY] = int(steps)
        out[_CONFIG] = ConfigRecord(values)
    return out
