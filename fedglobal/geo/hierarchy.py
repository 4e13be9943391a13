"""Groups of regions for hierarchical aggregation (``strategies.hierfavg``), and their clock.

:func:`region_groups` resolves the strategy's ``group_by``:

- ``"continent"``: the continent of each region's place (the country whose
  capital is nearest to it, :func:`fedglobal.geo.gazetteer.continent_of`);
  the places are ``[geo]``'s, or, without ``[geo]``, the regions' names
  resolved by the offline gazetteer;
- ``"geo"``: the ``[geo] groups`` table, ``{GROUP = [region, ...]}``;
- ``"column:NAME"``: the value of a categorical data column that is constant
  within each region (the regions report the values of their categorical
  features in their statistics; no row is sent).

With ``[geo]``, :class:`HierRounds` times the rounds on the clock with two
kinds of link (docs/geo.md, "Hierarchical rounds"):

- each region talks to its group server, at the spherical mean of its
  members' places, over its own links (download, compute, upload as in flat
  rounds, with the distance to the group server);
- on cloud rounds each group server then uploads its model to the cloud (the
  ``[geo] server``) and downloads the cloud's, over a link of ``[geo]``'s
  default bandwidths: the round ends when the last group has the cloud's model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flwr.app import Message, MessageType
from flwr.serverapp import Grid

from fedglobal.errors import ConfigError
from fedglobal.geo.clock import RoundTime
from fedglobal.geo.gazetteer import continent_of, lookup, spherical_mean
from fedglobal.geo.grid import GeoRounds
from fedglobal.geo.network import Link, great_circle_km
from fedglobal.server.comm import message_bytes
from fedglobal.server.grid import DelegatingGrid

__all__ = ["HierGrid", "HierRounds", "attach_groups", "check_experiment", "region_groups"]


def check_experiment(cfg: Any) -> None:
    """Refuse, in one line, hierarchical rounds under ``[geo] policy = "overcommit"``.

    Overcommit sends extra regions a copy of one region's instruction, which
    under ``hierfavg`` would carry another group's model.
    """
    from strategies.registry import strategy_class

    try:
        cls = strategy_class(cfg.strategy.name)
    except ValueError:
        return  # the [strategy] check names it
    if hasattr(cls, "set_groups") and cfg.geo is not None and cfg.geo.policy == "overcommit":
        raise ConfigError(
            f"strategy {cfg.strategy.name!r} is hierarchical: geo.policy = 'overcommit' is not "
            "supported with it (allowed: 'sync', 'deadline')"
        )


def region_groups(
    group_by: str,
    regions: Sequence[str],
    *,
    places: Mapping[str, Any] | None = None,
    table: Mapping[str, Any] | None = None,
    vocab: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> dict[str, str]:
    """Region -> group by ``group_by`` (see the module docstring).

    Raises:
        ConfigError: one line naming every region that cannot be grouped and why.
    """
    where = f"strategy.group_by = {group_by!r}"
    if group_by == "continent":
        groups, missing = {}, []
        for region in regions:
            place = (places or {}).get(region)
            point = (place.lat, place.lon) if place is not None else None
            if point is None:
                entry = lookup(region)
                point = (entry.lat, entry.lon) if entry is not None else None
            if point is None:
                missing.append(region)
            else:
                groups[region] = continent_of(*point)
        if missing:
            raise ConfigError(
                f"{where}: no place for {', '.join(map(repr, missing))} (not a country, UN M49 "
                "region or city name): give [geo] places, or group_by = 'geo' with [geo] groups"
            )
        return groups
    if group_by == "geo":
        if not table:
            raise ConfigError(
                f"{where} needs a [geo.groups] table: GROUP = [region, ...] for every region"
            )
        groups, problems = {}, []
        for group, members in table.items():
            if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
                problems.append(f"geo.groups.{group} must be a list of region names")
                continue
            for region in members:
                if region in groups:
                    problems.append(f"{region!r} is in {groups[region]!r} and {group!r}")
                groups[region] = str(group)
        unknown = sorted(set(groups) - set(regions))
        if unknown:
            problems.append(f"not regions of the data: {', '.join(map(repr, unknown))}")
        left = [r for r in regions if r not in groups]
        if left:
            problems.append(f"in no group: {', '.join(map(repr, left))}")
        if problems:
            raise ConfigError(f"{where}: [geo.groups]: " + "; ".join(problems))
        return groups
    column = group_by.removeprefix("column:")
    groups, problems = {}, []
    for region in regions:
        values = list((vocab or {}).get(region, {}).get(column, []))
        if len(values) != 1:
            problems.append(f"{region!r} has {len(values)} values ({', '.join(values[:4])})")
        else:
            groups[region] = values[0]
    if problems and not any((vocab or {}).get(r, {}).get(column) for r in regions):
        raise ConfigError(
            f"{where}: {column!r} is not a categorical feature of the data; the regions report "
            "the values of their categorical features only: add it to data.features"
        )
    if problems:
        raise ConfigError(
            f"{where}: a grouping column must have one value in each region: " + "; ".join(problems)
        )
    return groups


def attach_groups(
    strategy: Any,
    cfg: Any,
    *,
    regions: Sequence[str],
    vocab: Mapping[str, Mapping[str, Sequence[str]]],
    monitor: Any,
) -> None:
    """Give ``strategy`` (HierFAVG) its groups; with ``[geo]`` (the monitor's clock),
    time the rounds on the region -> group server -> cloud links (:class:`HierRounds`)."""
    geo = monitor.geo
    places = geo.clock.places if geo is not None else None
    table = cfg.geo.groups if cfg.geo is not None else None
    groups = region_groups(strategy.group_by, regions, places=places, table=table, vocab=vocab)
    strategy.set_groups(groups)
    if geo is not None:
        bandwidth = (cfg.geo.downlink_mbps, cfg.geo.uplink_mbps)
        monitor.attach_clock(
            HierRounds(geo, strategy, groups, bandwidth=bandwidth, route=cfg.geo.route_factor)
        )


class HierRounds:
    """The clock's hook for hierarchical rounds (see the module docstring).

    Re-points every region's link at its group server and adds, on cloud
    rounds, the exchange between the group servers and the cloud.
    """

    def __init__(
        self,
        geo: GeoRounds,
        strategy: Any,
        groups: Mapping[str, str],
        *,
        bandwidth: tuple[float, float],
        route: float,
    ) -> None:
        self.geo = geo
        self.strategy = strategy
        self.groups = dict(groups)
        clock = geo.clock
        members: dict[str, list[str]] = {}
        for region, group in sorted(self.groups.items()):
            if region in clock.places:
                members.setdefault(group, []).append(region)
        #: group -> (lat, lon) of its group server.
        self.group_servers = {
            g: spherical_mean([(clock.places[r].lat, clock.places[r].lon) for r in rs])
            for g, rs in members.items()
        }
        overhead = next(iter(clock.links.values())).overhead_s if clock.links else 0.01
        for region, group in self.groups.items():
            if region in clock.links:
                old = clock.links[region]
                clock.links[region] = Link(
                    great_circle_km(*_point(clock.places[region]), *self.group_servers[group]),
                    old.downlink_mbps,
                    old.uplink_mbps,
                    route_factor=old.route_factor,
                    overhead_s=old.overhead_s,
                )
        #: group -> its group server's link to the cloud (the [geo] server).
        self.cloud_links = {
            g: Link(
                great_circle_km(*point, *clock.server),
                bandwidth[0],
                bandwidth[1],
                route_factor=route,
                overhead_s=overhead,
            )
            for g, point in self.group_servers.items()
        }
        strategy.group_servers = {g: list(p) for g, p in self.group_servers.items()}

    @property
    def clock(self) -> Any:
        return self.geo.clock

    @property
    def server(self) -> tuple[float, float, str]:
        return self.geo.server

    def for_round(self, server_round: int, grid: Grid) -> HierGrid:
        return HierGrid(self, server_round, self.geo.for_round(server_round, grid))

    def state_dict(self) -> dict[str, Any]:
        return self.geo.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.geo.load_state_dict(state)

    def cloud_exchange(self, server_round: int, model_bytes: int) -> None:
        """Extend ``server_round`` by the groups' upload to the cloud and download back."""
        clock = self.clock
        span = clock.rounds[-1]
        if span.round != server_round:
            return
        ends: dict[str, float] = {}
        for row in clock.regions:
            if row.round == server_round and row.kept and row.region in self.groups:
                group = self.groups[row.region]
                ends[group] = max(ends.get(group, 0.0), row.arrived_s)
        if not ends:
            return
        at_cloud = max(
            span.start_s + end + self.cloud_links[g].upload_s(model_bytes)
            for g, end in ends.items()
        )
        end = max(at_cloud + self.cloud_links[g].download_s(model_bytes) for g in ends)
        clock.rounds[-1] = RoundTime(span.round, span.start_s, end, span.waited_s)
        clock.now = end


class HierGrid(DelegatingGrid):
    """One round's view: the clocked grid, then the cloud exchange on cloud rounds."""

    def __init__(self, rounds: HierRounds, server_round: int, grid: Grid) -> None:
        super().__init__(grid)
        self._rounds = rounds
        self._round = server_round

    def __getattr__(self, name: str) -> Any:
        if name == "_grid":
            raise AttributeError(name)
        return getattr(self._grid, name)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        replies = self._grid.send_and_receive(messages, timeout=timeout)
        train = [m for m in messages if m.metadata.message_type == MessageType.TRAIN]
        if train and self._rounds.strategy.is_cloud_round(self._round):
            self._rounds.cloud_exchange(self._round, message_bytes(train[0])[0])
        return replies


def _point(place: Any) -> tuple[float, float]:
    return float(place.lat), float(place.lon)
