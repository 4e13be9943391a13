"""Asynchronous rounds on the simulated clock: FedBuff and FedAsync (``strategies.asynchronous``).

One round of the round loop is one *server step*. :class:`AsyncRounds` takes
the place of :class:`~fedglobal.geo.grid.GeoRounds` as the round loop's
``train_grid`` and hands each step an :class:`AsyncGrid`:

1. ``get_node_ids`` lists the regions that are idle (no model in flight);
   the strategy sends the current model to some or all of them.
2. Those messages are trained at once (one ``send_and_receive``, so cohort
   training takes them together), and each reply is given its simulated
   arrival: the step's start (the clock's ``now``) plus the download, compute
   and upload times of :class:`~fedglobal.geo.clock.SimClock`. Replies wait
   in flight until the clock reaches them; nothing really runs concurrently.
3. The step takes the ``arrivals_per_step`` earliest replies in flight
   (ties by region name), the clock moves to the last of them, and they go
   to the strategy, each tagged with the round its model was sent
   (``strategies.asynchronous.ASYNC_RECORD``): a region trains from the model
   version it received, and its staleness is the steps since.

So a slow region's reply is aggregated later, against a newer model, exactly
where the clock says it arrives. The order is deterministic: arrival times
are arithmetic, and ties go by region name.

What the clock records: one sim_times.csv row per reply aggregated (or
failed), under the round its model was *sent* (``arrived_s`` counts from that
round's start, as in synchronous rounds); replies still in flight when the run
ends have no row. Each step's span is ``sim_start_s``..``sim_end_s`` in
rounds.csv. Error replies count at the step that sent them (the region is
idle again). The replies in flight are part of the checkpoint
(:meth:`AsyncRounds.state_dict`), so a resumed run continues bit for bit.

Policies ``deadline`` and ``overcommit`` and availability windows are for
synchronous rounds: with an asynchronous strategy the experiment is refused
when it loads (:func:`check_experiment`), as are engines other than
``inprocess`` and ``cluster`` (see docs/strategies.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Message, MessageType, Metadata, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from flwr.serverapp import Grid

from fedglobal.errors import ConfigError
from fedglobal.geo.clock import RegionTime, RoundTime, SimClock
from fedglobal.geo.grid import LOCAL_STEPS_KEY, GeoRounds
from fedglobal.server.comm import message_bytes
from fedglobal.server.grid import DelegatingGrid
from strategies.asynchronous import ASYNC_RECORD, DISPATCHED_ROUND

__all__ = [
    "ASYNC_ENGINES",
    "AsyncGrid",
    "AsyncRounds",
    "InFlight",
    "check_experiment",
    "is_asynchronous",
]

#: Engines the asynchronous driver runs on (the in-process Grid, also on a Ray cluster).
ASYNC_ENGINES = ("inprocess", "cluster")


def is_asynchronous(strategy_class: Any) -> bool:
    """Whether a strategy (class or instance) is driven by the clock's arrivals."""
    return bool(getattr(strategy_class, "asynchronous", False))


def check_experiment(cfg: Any) -> None:
    """Refuse, in one line, an asynchronous strategy where it cannot run.

    Raises:
        ConfigError: no ``[geo]`` (nothing orders the arrivals), a ``[geo]``
            policy other than ``sync`` or an availability window, or an engine
            other than those of :data:`ASYNC_ENGINES`.
    """
    from strategies.registry import strategy_class

    try:
        cls = strategy_class(cfg.strategy.name)
    except ValueError:
        return  # the [strategy] check names it
    if not is_asynchronous(cls):
        return
    name = cfg.strategy.name
    geo = cfg.geo
    problems = []
    if geo is None:
        problems.append(
            "it needs [geo]: its simulated clock orders the regions' arrivals (add [geo] with "
            "the regions' places, e.g. resolve = 'names', a table, or [geo.regions.NAME] lat/lon)"
        )
    else:
        if geo.policy != "sync":
            problems.append(
                f"geo.policy = {geo.policy!r} is for synchronous rounds; leave it at 'sync'"
            )
        if geo.availability is not None:
            problems.append("geo.availability is not supported with asynchronous steps yet")
    if cfg.experiment.engine not in ASYNC_ENGINES:
        problems.append(
            f"experiment.engine = {cfg.experiment.engine!r} is not supported (allowed: "
            f"{', '.join(ASYNC_ENGINES)}; see docs/strategies.md)"
        )
    if problems:
        raise ConfigError(f"strategy {name!r} is asynchronous: " + "; ".join(problems))


@dataclass
class InFlight:
    """A region's reply on its way: trained, not yet arrived at the server."""

    region: str
    node: int
    dispatched: int  # the round (server step) that sent its model
    start_s: float  # that round's simulated start
    download_s: float
    compute_s: float
    upload_s: float
    steps: int
    reply: Message

    @property
    def took_s(self) -> float:
        return self.download_s + self.compute_s + self.upload_s

    @property
    def arrival_s(self) -> float:
        return self.start_s + self.took_s


class AsyncRounds:
    """The clock's hook into the round loop for asynchronous strategies.

    Args:
        geo: the run's :class:`~fedglobal.geo.grid.GeoRounds` (clock, links, steps).
        per_step: arrivals per server step (the strategy's ``arrivals_per_step``).
    """

    def __init__(self, geo: GeoRounds, *, per_step: int) -> None:
        if per_step < 1:
            raise ValueError(f"per_step must be >= 1, got {per_step}")
        self.geo = geo
        self.per_step = int(per_step)
        self.in_flight: list[InFlight] = []
        self._saved: list[dict[str, Any]] = []  # restored, bound to nodes on the next step

    @property
    def clock(self) -> SimClock:
        return self.geo.clock

    @property
    def server(self) -> tuple[float, float, str]:
        return self.geo.server

    def for_round(self, server_round: int, grid: Grid) -> AsyncGrid:
        """The grid of ``server_round``'s ``configure_train`` and train exchange."""
        if self._saved:
            self._bind(grid)
        return AsyncGrid(self, server_round, grid)

    # ---- checkpoints -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The clock's state plus the replies in flight (their contents serialised)."""
        flights = [self._entry(f) for f in self.in_flight] + list(self._saved)
        return {**self.clock.state_dict(), "in_flight": flights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.clock.load_state_dict(state)
        self.in_flight = []
        self._saved = [dict(e) for e in state.get("in_flight", [])]

    @staticmethod
    def _entry(f: InFlight) -> dict[str, Any]:
        data = recorddict_to_proto(f.reply.content).SerializeToString()
        return {
            "region": f.region,
            "dispatched": f.dispatched,
            "start_s": f.start_s,
            "download_s": f.download_s,
            "compute_s": f.compute_s,
            "upload_s": f.upload_s,
            "steps": f.steps,
            "content": np.frombuffer(data, dtype=np.uint8).copy(),
        }

    def _bind(self, grid: Grid) -> None:
        """Give the restored replies the node ids of this run's regions."""
        nodes = {self.geo.region_of(n): n for n in grid.get_node_ids()}
        for e in self._saved:
            node = nodes.get(str(e["region"]))
            if node is None:
                continue  # the region is gone: its reply never arrives
            proto = ProtoRecordDict()
            proto.ParseFromString(np.asarray(e["content"], dtype=np.uint8).tobytes())
            metadata = Metadata(
                run_id=0,
                message_id="",
                src_node_id=int(node),
                dst_node_id=0,
                reply_to_message_id="",
                group_id=str(e["dispatched"]),
                created_at=0.0,
                ttl=43_200.0,
                message_type=MessageType.TRAIN,
            )
            reply = Message(content=recorddict_from_proto(proto), metadata=metadata)
            self.in_flight.append(
                InFlight(
                    region=str(e["region"]),
                    node=int(node),
                    dispatched=int(e["dispatched"]),
                    start_s=float(e["start_s"]),
                    download_s=float(e["download_s"]),
                    compute_s=float(e["compute_s"]),
                    upload_s=float(e["upload_s"]),
                    steps=int(e["steps"]),
                    reply=reply,
                )
            )
        self._saved = []


class AsyncGrid(DelegatingGrid):
    """One server step's view of ``grid`` (see the module docstring)."""

    def __init__(self, rounds: AsyncRounds, server_round: int, grid: Grid) -> None:
        super().__init__(grid)
        self._rounds = rounds
        self._round = server_round

    def __getattr__(self, name: str) -> Any:  # region_of and whatever else the grid offers
        if name == "_grid":
            raise AttributeError(name)
        return getattr(self._grid, name)

    def get_node_ids(self) -> Iterable[int]:
        """The nodes of regions with a place on the clock and no model in flight."""
        rounds = self._rounds
        busy = {f.region for f in rounds.in_flight}
        return [
            n
            for n in sorted(self._grid.get_node_ids())
            if (region := rounds.geo.region_of(n)) in rounds.clock.places and region not in busy
        ]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        if any(m.metadata.message_type != MessageType.TRAIN for m in messages):
            return self._grid.send_and_receive(messages, timeout=timeout)
        rounds, clock = self._rounds, self._rounds.clock
        geo = rounds.geo
        start = clock.now
        replies = list(self._grid.send_and_receive(messages, timeout=timeout)) if messages else []
        sizes = dict(geo.reply_bytes()) if messages else {}
        failed: list[Message] = []
        for message in messages:
            node = message.metadata.dst_node_id
            region = geo.region_of(node)
            config = message.content.get("config")
            steps = geo.full_steps.get(region, 1)
            if isinstance(config, ConfigRecord) and LOCAL_STEPS_KEY in config:
                steps = int(config[LOCAL_STEPS_KEY])
            down = clock.download_s(region, message_bytes(message)[0])
            comp = clock.compute_s(region, steps)
            reply = next((r for r in replies if r.metadata.src_node_id == node), None)
            if reply is None or reply.has_error():
                clock.regions.append(
                    RegionTime(self._round, region, down, comp, math.nan, math.nan, False, steps)
                )
                if reply is not None:
                    failed.append(reply)
                continue
            up = clock.upload_s(region, sizes.get(node, 0))
            rounds.in_flight.append(
                InFlight(region, node, self._round, start, down, comp, up, steps, reply)
            )
        order = sorted(rounds.in_flight, key=lambda f: (f.arrival_s, f.region))
        due = order[: rounds.per_step]
        end = max([start] + [f.arrival_s for f in due])
        for f in due:
            clock.regions.append(
                RegionTime(
                    f.dispatched,
                    f.region,
                    f.download_s,
                    f.compute_s,
                    f.upload_s,
                    f.took_s,
                    True,
                    f.steps,
                )
            )
        rounds.in_flight = order[len(due) :]
        clock.rounds.append(RoundTime(self._round, start, end, 0.0))
        clock.now = end
        return failed + [_tagged(f) for f in due]


def _tagged(f: InFlight) -> Message:
    """``f``'s reply with the record saying which round's model it trained from."""
    content = RecordDict(dict(f.reply.content.items()))
    content[ASYNC_RECORD] = ConfigRecord({DISPATCHED_ROUND: int(f.dispatched)})
    return Message(content=content, metadata=f.reply.metadata)
