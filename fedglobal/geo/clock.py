"""The simulated clock of a federation: when each round starts and ends.

Pure arithmetic over message sizes, step counts and places; it never sleeps
and never reads how long this machine really trained, so the same seed gives
the same clock on every engine and machine (DESIGN decision 12).

A train round that starts at simulated time ``t0`` (seconds after ``[geo]
start``) gives each sampled region

    download_s = link.download_s(bytes of the server's message)
    compute_s  = steps * flops_per_step / (compute GFLOP/s * 1e9)
    upload_s   = link.upload_s(bytes of its reply)
    arrived_s  = download_s + compute_s + upload_s      (after t0)

and ends, by ``policy``:

- ``sync``: when the last sampled region's reply arrives;
- ``deadline``: at ``deadline_s`` after its start, or earlier when every reply
  is in; replies arriving later are not kept. Before sending, the server cuts
  each region's local steps to those that fit before the deadline
  (:meth:`SimClock.steps_within`), the partial work FedProx aggregates
  (Li et al. 2020, "Federated Optimization in Heterogeneous Networks");
- ``overcommit``: ``ceil(overcommit * m)`` regions are sent the round and
  the first ``m`` replies to arrive are kept; the round ends with the m-th
  (FedScale's rule, Lai et al. 2022, "FedScale: Benchmarking Model and System
  Performance of Federated Learning at Scale", ICML; after Bonawitz et al.
  2019, "Towards Federated Learning at Scale: System Design", MLSys).

Ties in arrival are broken by region name. Server-side aggregation and
federated evaluation take no simulated time (evaluation is measurement).

With an availability ``window`` (a daily local-time window, or a trace file of
per-region intervals), a round can only start when at least ``needed``
regions are available; otherwise the
clock first skips ahead to the earliest such moment (:meth:`SimClock.wait_for`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fedglobal.geo.availability import Window
from fedglobal.geo.network import Link, great_circle_km
from fedglobal.geo.places import Place
from fedglobal.geo.trace import Trace

__all__ = ["POLICIES", "AvailabilityError", "RegionTime", "RoundTime", "SimClock", "Work"]

POLICIES = ("sync", "deadline", "overcommit")


class AvailabilityError(RuntimeError):
    """Too few regions are ever available at once for a round to start."""


@dataclass(frozen=True)
class Work:
    """What one region was sent and sent back in a round."""

    region: str
    download_bytes: int
    upload_bytes: int | None  # None: it did not reply (an error)
    steps: int
    partial: bool = False  # fewer steps than a full round (cut by the deadline)


@dataclass(frozen=True)
class RegionTime:
    """One row of sim_times.csv (``arrived_s`` counts from the round's start)."""

    round: int
    region: str
    download_s: float
    compute_s: float
    upload_s: float
    arrived_s: float
    kept: bool
    steps: int


@dataclass(frozen=True)
class RoundTime:
    """A round's simulated span, and the wait for availability before it."""

    round: int
    start_s: float
    end_s: float
    waited_s: float


class SimClock:
    """The simulated clock (see the module docstring).

    Args:
        places: every region's :class:`~fedglobal.geo.places.Place`.
        server: the server's ``(lat, lon)``.
        flops_per_step: training FLOPs of one local step
            (:func:`fedglobal.geo.compute.train_flops_per_step`).
        policy: ``sync`` | ``deadline`` | ``overcommit``.
        deadline_s: the deadline (policy ``deadline``).
        overcommit: the overcommit factor (policy ``overcommit``).
        window: the availability: a daily local-time :class:`Window`, or a
            :class:`~fedglobal.geo.trace.Trace` of per-region intervals (None:
            always available).
        start_epoch: the UTC instant of simulated time 0 (seconds since the epoch).
        route_factor, overhead_s: see :mod:`fedglobal.geo.network`.
        drop_partial: under ``deadline``, whether partial work is dropped too
            (the strategy's ``drop_stragglers``: FedAvg drops, FedProx keeps).
    """

    def __init__(
        self,
        places: Mapping[str, Place],
        server: tuple[float, float],
        *,
        flops_per_step: float,
        policy: str = "sync",
        deadline_s: float | None = None,
        overcommit: float = 1.0,
        window: Window | Trace | None = None,
        start_epoch: float = 0.0,
        route_factor: float = 2.0,
        overhead_s: float = 0.01,
        drop_partial: bool = False,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        if policy == "deadline" and (deadline_s is None or deadline_s <= 0):
            raise ValueError("policy 'deadline' needs deadline_s > 0")
        if overcommit < 1.0:
            raise ValueError(f"overcommit must be >= 1, got {overcommit}")
        self.places = dict(places)
        self.server = (float(server[0]), float(server[1]))
        self.flops_per_step = float(flops_per_step)
        self.policy = policy
        self.deadline_s = deadline_s
        self.overcommit = float(overcommit)
        self.window = window
        self.start_epoch = float(start_epoch)
        self.drop_partial = bool(drop_partial)
        self.links = {
            name: Link(
                great_circle_km(p.lat, p.lon, *self.server),
                p.downlink_mbps,
                p.uplink_mbps,
                route_factor=route_factor,
                overhead_s=overhead_s,
            )
            for name, p in self.places.items()
        }
        self.now = 0.0
        self._waited = 0.0
        self.rounds: list[RoundTime] = []
        self.regions: list[RegionTime] = []

    # ---- parts of a round --------------------------------------------------------------
    def step_s(self, region: str) -> float:
        """Simulated seconds of one local step in ``region``."""
        return self.flops_per_step / (self.places[region].compute * 1e9)

    def download_s(self, region: str, nbytes: int) -> float:
        return self.links[region].download_s(nbytes)

    def upload_s(self, region: str, nbytes: int) -> float:
        return self.links[region].upload_s(nbytes)

    def compute_s(self, region: str, steps: int) -> float:
        return steps * self.step_s(region)

    def steps_within(self, region: str, download_bytes: int, upload_bytes: int, steps: int) -> int:
        """Of ``steps``, how many fit before the deadline (0: not even one; all without one)."""
        if self.policy != "deadline" or self.deadline_s is None:
            return steps
        budget = self.deadline_s - self.download_s(region, download_bytes)
        budget -= self.upload_s(region, upload_bytes)
        if budget <= 0:
            return 0
        return int(min(steps, math.floor(budget / self.step_s(region) + 1e-9)))

    # ---- availability ------------------------------------------------------------------
    def available(self, regions: Iterable[str], at: float | None = None) -> list[str]:
        """The regions inside the availability window at simulated time ``at`` (default now)."""
        regions = list(regions)
        if self.window is None:
            return regions
        epoch = self.start_epoch + (self.now if at is None else at)
        return [r for r in regions if self.window.open_at(r, epoch, self.places[r].timezone)]

    def wait_for(self, regions: Iterable[str], needed: int) -> list[str]:
        """Skip ahead until at least ``needed`` of ``regions`` are available; return them.

        The clock only moves forward, to the earliest window opening at which
        enough regions are inside their windows (none if all already are).
        """
        regions = list(regions)
        needed = min(max(1, needed), len(regions))
        now = self.available(regions)
        if len(now) >= needed or self.window is None:
            return now
        epoch = self.start_epoch + self.now
        openings = self.window.openings([(r, self.places[r].timezone) for r in regions], epoch)
        for opening in openings:
            at = opening - self.start_epoch
            found = self.available(regions, at)
            if len(found) >= needed:
                self._waited += at - self.now
                self.now = at
                return found
        raise AvailabilityError(
            f"availability {self.window.describe()}: fewer than {needed} regions (the "
            f"strategy's minimum) are ever inside it at the same time (from simulated second "
            f"{self.now:g}); widen the availability or lower strategy.min_train_clients / "
            f"min_available_clients"
        )

    # ---- a whole round -----------------------------------------------------------------
    def close_round(
        self, server_round: int, work: Iterable[Work], *, keep: int | None = None
    ) -> RoundTime:
        """Time one train round that starts now; advance the clock to its end.

        ``keep`` (policy ``overcommit``): how many of the earliest replies count.
        Returns the round's span; its per-region rows are appended to :attr:`regions`.
        """
        start = self.now
        rows: list[tuple[Work, float, float, float, float]] = []
        for w in sorted(work, key=lambda w: w.region):
            down = self.download_s(w.region, w.download_bytes)
            comp = self.compute_s(w.region, w.steps)
            up = math.nan if w.upload_bytes is None else self.upload_s(w.region, w.upload_bytes)
            rows.append((w, down, comp, up, down + comp + up))
        order = sorted((r for r in rows if not math.isnan(r[4])), key=lambda r: (r[4], r[0].region))
        if self.policy == "overcommit":
            kept = order[: len(order) if keep is None else keep]
            length = kept[-1][4] if kept else 0.0
        elif self.policy == "deadline":
            assert self.deadline_s is not None
            on_time = [r for r in order if r[4] <= self.deadline_s + 1e-9]
            kept = [r for r in on_time if not (self.drop_partial and r[0].partial)]
            cut = len(on_time) < len(rows) or any(r[0].partial for r in on_time)
            length = self.deadline_s if cut else (order[-1][4] if order else 0.0)
        else:
            kept = order
            length = order[-1][4] if order else 0.0
        kept_regions = {r[0].region for r in kept}
        for w, down, comp, up, total in rows:
            self.regions.append(
                RegionTime(
                    server_round, w.region, down, comp, up, total, w.region in kept_regions, w.steps
                )
            )
        span = RoundTime(server_round, start, start + length, self._waited)
        self.rounds.append(span)
        self.now = start + length
        self._waited = 0.0
        return span

    def span(self, server_round: int) -> RoundTime | None:
        """The simulated span of ``server_round`` (None if it has not been timed)."""
        for span in reversed(self.rounds):
            if span.round == server_round:
                return span
        return None

    # ---- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The clock's time and tables, as JSON values."""
        return {
            "now": self.now,
            "waited": self._waited,
            "rounds": [asdict(r) for r in self.rounds],
            "regions": [asdict(r) for r in self.regions],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.now = float(state["now"])
        self._waited = float(state.get("waited", 0.0))
        self.rounds = [RoundTime(**r) for r in state.get("rounds", [])]
        self.regions = [RegionTime(**r) for r in state.get("regions", [])]
