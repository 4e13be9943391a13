"""Availability windows in each region's local time.

A window ``"22:00-06:00"`` says when a region can be sampled for training, in
its own IANA time zone (a window may wrap past midnight). The simulated clock
checks it at each round's simulated start; when fewer regions are available
than the strategy needs, the clock moves on to the earliest moment at which
enough of them are (:meth:`Window.next_open`). Time zones come from the
standard library's ``zoneinfo`` (the IANA database, with the ``tzdata``
package as its fallback), so daylight saving time is honoured.

The other kind of availability, per-region intervals from a trace file, is
:class:`fedglobal.geo.trace.Trace`; both answer :meth:`Window.open_at` and
:meth:`Window.openings`, which is all the clock asks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["Window", "WindowError", "check_timezone", "parse_start"]

_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_DAY = 24 * 60


class WindowError(ValueError):
    """A window, time zone or start time that cannot be read (the message says why)."""


@dataclass(frozen=True)
class Window:
    """A daily window ``[open, close)`` in minutes after local midnight."""

    open_min: int
    close_min: int

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"HH:MM-HH:MM"`` (24-hour clock; ``22:00-06:00`` wraps past midnight)."""
        match = _WINDOW.match(str(text))
        if not match:
            raise WindowError(f"{text!r} is not a window like '22:00-06:00' (HH:MM-HH:MM)")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise WindowError(f"{text!r} has a time outside 00:00-24:00")
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if start == end % _DAY:
            raise WindowError(f"{text!r} is empty (it opens when it closes)")
        return cls(start, end)

    def __str__(self) -> str:
        return f"{self.open_min // 60:02d}:{self.open_min % 60:02d}-" + (
            f"{self.close_min // 60:02d}:{self.close_min % 60:02d}"
        )

    def describe(self) -> str:
        return f"window {self}"

    def open_at(self, region: str, epoch_s: float, timezone: str) -> bool:
        """Whether ``region`` (whose local zone is ``timezone``) is in the window at ``epoch_s``."""
        del region  # the same window for every region, in its own local time
        return self.contains(epoch_s, timezone)

    def openings(self, regions: Iterable[tuple[str, str]], epoch_s: float) -> list[float]:
        """The window's next two openings ``>= epoch_s`` for each of ``regions`` ((name,
        zone) pairs): a daily window, so enough to find when enough regions are in it."""
        return sorted(
            {
                self.next_open(epoch_s + day * 86_400.0, zone)
                for _, zone in regions
                for day in (0, 1)
            }
        )

    def contains(self, epoch_s: float, timezone: str) -> bool:
        """Whether the UTC instant ``epoch_s`` lies in the window in ``timezone``'s local time."""
        local = datetime.fromtimestamp(epoch_s, _zone(timezone))
        minute = local.hour * 60 + local.minute + local.second / 60
        if self.open_min < self.close_min:
            return self.open_min <= minute < self.close_min
        return minute >= self.open_min or minute < self.close_min

    def next_open(self, epoch_s: float, timezone: str) -> float:
        """The first UTC instant ``>= epoch_s`` at which the window is open."""
        if self.contains(epoch_s, timezone):
            return float(epoch_s)
        zone = _zone(timezone)
        local = datetime.fromtimestamp(epoch_s, zone)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        for day in range(0, 3):
            day_start = (midnight + timedelta(days=day)).replace(tzinfo=None)
            opens = (day_start + timedelta(minutes=self.open_min)).replace(tzinfo=zone)
            t = opens.timestamp()
            if t >= epoch_s:
                return float(t)
        raise AssertionError("a daily window opens within two days")  # pragma: no cover


@lru_cache(maxsize=512)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA time zone (``Europe/Berlin``), else :class:`WindowError`."""
    try:
        _zone(str(name))
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise WindowError(f"{name!r} is not an IANA time zone (like 'Europe/Berlin')") from None
    return str(name)


def parse_start(text: str) -> float:
    """An ISO 8601 date-time (``2025-01-06T00:00:00Z``) as seconds since the epoch (UTC)."""
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise WindowError(
            f"{text!r} is not an ISO 8601 date-time like 2025-01-06T00:00:00Z"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
