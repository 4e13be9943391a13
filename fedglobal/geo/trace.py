"""Availability from a trace file: ``[geo] availability = "trace.csv"``.

The alternative to one daily local-time window for every region
(:class:`fedglobal.geo.availability.Window`): per-region intervals, as logged
by real sites (maintenance windows, the hours a hospital's GPU is free).

The file is a CSV with a header and the columns ``region, start, end``; one row
is one interval ``[start, end)`` in which the region can be sampled for
training. A region may have any number of rows; overlapping or touching
intervals merge. ``start`` and ``end`` are ISO 8601 date-times in **UTC**
(``2025-01-06T22:00:00Z``; a value without a zone is UTC, and a value with an
offset such as ``+01:00`` is converted to UTC). They are absolute instants,
compared with ``[geo] start`` + the simulated seconds; outside every interval,
and after the trace's last one, a region is unavailable.

Every region of the federation needs at least one row, and every region the
trace names must be one of the federation's: either mistake is one line that
names the file and the regions. A bad row is one line that names the file,
the row's line number and what is allowed.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from fedglobal.geo.availability import Window, WindowError

__all__ = ["COLUMNS", "Trace", "is_trace", "parse_availability"]

COLUMNS = ("region", "start", "end")
_ALLOWED = "ISO 8601 date-times in UTC like 2025-01-06T22:00:00Z, with end after start"


def is_trace(text: str) -> bool:
    """Whether an ``availability`` value names a trace file rather than a window."""
    return str(text).strip().lower().endswith(".csv")


def parse_availability(text: str) -> Window | Trace:
    """``[geo] availability``: a trace file (``*.csv``, read and checked) or a window."""
    if is_trace(text):
        return Trace.read(text)
    try:
        return Window.parse(text)
    except WindowError as exc:
        raise WindowError(f"{exc}; or name a trace file (*.csv: {','.join(COLUMNS)})") from None


class Trace:
    """Per-region availability intervals (UTC seconds since the epoch), merged and sorted."""

    def __init__(self, intervals: dict[str, list[tuple[float, float]]], name: str) -> None:
        self.name = name
        self.intervals = {r: _merge(spans) for r, spans in intervals.items()}
        self._starts = {r: [s for s, _ in spans] for r, spans in self.intervals.items()}

    @classmethod
    def read(cls, path: str | Path) -> Trace:
        """Read and check a trace CSV; :class:`WindowError` names the file, line and rule."""
        path = Path(path)
        if not path.is_file():
            raise WindowError(f"trace file not found: {str(path)!r}")
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise WindowError(f"{path}: not a readable CSV trace: {exc}") from None
        if not rows:
            raise WindowError(f"{path}: empty; a trace has the header {','.join(COLUMNS)}")
        header = [h.strip() for h in rows[0]]
        if header != list(COLUMNS):
            raise WindowError(
                f"{path}: the header is {','.join(header)!r}; a trace has exactly the columns "
                f"{','.join(COLUMNS)} (times: {_ALLOWED})"
            )
        intervals: dict[str, list[tuple[float, float]]] = {}
        problems: list[str] = []
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) != 3:
                problems.append(f"line {line}: {len(row)} values, expected 3 (region, start, end)")
                continue
            region, start_text, end_text = (cell.strip() for cell in row)
            where = f"line {line} ({region or 'no region'})"
            if not region:
                problems.append(f"{where}: empty region")
                continue
            start, end = _instant(start_text), _instant(end_text)
            for key, text, value in (("start", start_text, start), ("end", end_text, end)):
                if value is None:
                    problems.append(f"{where}: {key} = {text!r} is not a date-time ({_ALLOWED})")
            if start is None or end is None:
                continue
            if end <= start:
                problems.append(f"{where}: end {end_text!r} is not after start {start_text!r}")
                continue
            intervals.setdefault(region, []).append((start, end))
        if problems:
            raise WindowError(f"{path}: " + "; ".join(problems))
        if not intervals:
            raise WindowError(f"{path}: no intervals (rows of {','.join(COLUMNS)})")
        return cls(intervals, path.name)

    def __str__(self) -> str:
        return f"trace {self.name}"

    def describe(self) -> str:
        return str(self)

    def check_regions(self, regions: Sequence[str]) -> None:
        """:class:`WindowError` unless the trace has rows for exactly the federation's regions."""
        missing = [r for r in regions if r not in self.intervals]
        unknown = sorted(set(self.intervals) - set(regions))
        problems = []
        if missing:
            problems.append(
                f"no rows for region(s) {', '.join(map(repr, missing))} (every region needs "
                "at least one interval)"
            )
        if unknown:
            problems.append(
                f"rows for region(s) the data does not have: {', '.join(map(repr, unknown))} "
                f"(regions: {', '.join(regions)})"
            )
        if problems:
            raise WindowError(f"availability {self}: " + "; ".join(problems))

    def open_at(self, region: str, epoch_s: float, timezone: str | None = None) -> bool:
        """Whether ``region`` is inside one of its intervals at UTC ``epoch_s``."""
        del timezone  # trace times are UTC
        spans = self.intervals.get(region, [])
        i = bisect.bisect_right(self._starts.get(region, []), epoch_s) - 1
        return i >= 0 and epoch_s < spans[i][1]

    def openings(self, regions: Iterable[tuple[str, str]], epoch_s: float) -> list[float]:
        """The instants ``>= epoch_s`` at which one of ``regions`` ((name, zone) pairs) opens."""
        found: set[float] = set()
        for region, _ in regions:
            starts = self._starts.get(region, [])
            found.update(starts[bisect.bisect_left(starts, epoch_s) :])
        return sorted(found)


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _instant(text: str) -> float | None:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
