"""Build the server's clock for a run from ``[geo]``, the model and the regions."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fedglobal.errors import ConfigError
from fedglobal.geo.asynchronous import AsyncRounds
from fedglobal.geo.availability import WindowError, parse_start
from fedglobal.geo.clock import SimClock
from fedglobal.geo.columns import column_places
from fedglobal.geo.compute import train_flops_per_step
from fedglobal.geo.grid import GeoRounds
from fedglobal.geo.places import PlacesError, build_places, server_point
from fedglobal.geo.trace import Trace, parse_availability
from strategies.interface import view

__all__ = ["full_steps", "server_clock"]


def full_steps(client: Any, rows: Mapping[str, int]) -> dict[str, int]:
    """Local steps of a full round per region: ``[client] steps``, else epochs x batches.

    The same rule as the client's ``RegionalClient.full_steps``, from the
    train row counts every region reported in its statistics.
    """
    if client.steps:
        return {r: int(client.steps) for r in rows}
    return {r: client.epochs * max(1, math.ceil(n / client.batch_size)) for r, n in rows.items()}


def server_clock(
    cfg: Any,
    *,
    model: Any,
    rows: Mapping[str, int],
    regions: Sequence[str],
    strategy: Any,
    region_of: Callable[[int], str],
    reply_bytes: Callable[[], Mapping[int, int]],
    needed: int,
    stats: Mapping[str, Any] | None = None,
) -> GeoRounds | AsyncRounds:
    """The :class:`GeoRounds` of a run with ``[geo]`` (``cfg.geo`` must be set); for an
    asynchronous strategy (``fedbuff``, ``fedasync``) the :class:`AsyncRounds` over it.

    ``stats`` maps each region to the statistics it reported
    (:class:`fedglobal.data.LocalStats`); with ``geo.lat_column`` /
    ``geo.lon_column``, the regions' places are their federated means.

    Raises:
        ConfigError: a region without coordinates, or a server name not found
            (one line naming every one).
    """
    geo = cfg.geo
    try:
        columns = None
        if geo.lat_column is not None:
            columns = column_places(stats or {}, geo.lat_column, geo.lon_column)
        places = build_places(list(regions), geo, columns)
        server = server_point(geo, places)
        window = parse_availability(geo.availability) if geo.availability else None
        if isinstance(window, Trace):
            window.check_regions(list(regions))
    except PlacesError as exc:
        raise ConfigError(str(exc)) from None
    except WindowError as exc:
        raise ConfigError(f"[geo]: geo.availability: {exc}") from None
    clock = SimClock(
        places,
        (server[0], server[1]),
        # a strategy whose regions train more than one model per step (Ditto: 2) says so
        flops_per_step=train_flops_per_step(model, cfg.client.batch_size)
        * view(strategy).needs.local_work,
        policy=geo.policy,
        deadline_s=geo.deadline_s,
        overcommit=geo.overcommit if geo.policy == "overcommit" else 1.0,
        window=window,
        start_epoch=parse_start(geo.start),
        route_factor=geo.route_factor,
        overhead_s=geo.overhead_s,
        drop_partial=view(strategy).needs.drop_stragglers,
    )
    rounds = GeoRounds(
        clock,
        region_of=region_of,
        full_steps=full_steps(cfg.client, rows),
        needed=needed,
        seed=cfg.experiment.seed,
        reply_bytes=reply_bytes,
    )
    rounds.server = (server[0], server[1], server[2])
    if view(strategy).asynchronous:  # fedbuff, fedasync: steps by arrivals
        return AsyncRounds(rounds, per_step=strategy.arrivals_per_step)
    return rounds
