"""What ``[geo]`` adds to a run folder: sim_times.csv, summary fields, plots.

- ``sim_times.csv``: one row per round and region sent the round: ``round,
  region, download_s, compute_s, upload_s, arrived_s, kept`` (``arrived_s``
  counts from the round's ``sim_start_s`` in rounds.csv; ``kept`` is 1 when
  the reply was aggregated-eligible under the policy, else 0), plus ``steps``.
- summary.json: ``sim_total_s`` (the end of the last round),
  ``sim_time_to_target_s`` (the end of the first round meeting ``[geo]
  target``, null when never met or no target) and ``geo`` (policy, server,
  each region's place and its source, and how the kept regions' time split
  into compute, transfer and waiting).
- plots: ``regions_map.png`` (regions by longitude and latitude, coloured by
  the final metric and by their share of waiting time; points only, no map
  data) and ``<metric>_sim_hours.png`` (the pooled metric against simulated
  hours).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from fedglobal.geo.clock import SimClock
from fedglobal.geo.target import Target

__all__ = [
    "SIM_TIMES_COLUMNS",
    "geo_figures",
    "metric_sim_hours_figure",
    "regions_map_figure",
    "run_geo_figures",
    "sim_times_frame",
    "summary_fields",
    "time_split",
    "waiting_shares",
    "write_geo_plots",
]

SIM_TIMES_COLUMNS = [
    "round",
    "region",
    "download_s",
    "compute_s",
    "upload_s",
    "arrived_s",
    "kept",
    "steps",
]


def sim_times_frame(clock: SimClock) -> pd.DataFrame:
    """The clock's per-round, per-region rows (sim_times.csv)."""
    rows = [
        {**vars(r), "kept": int(r.kept)}  # RegionTime is a plain frozen dataclass
        for r in clock.regions
    ]
    return pd.DataFrame(rows, columns=SIM_TIMES_COLUMNS)


def time_split(clock: SimClock) -> dict[str, float]:
    """Seconds the kept regions spent computing, transferring and waiting, summed.

    Waiting is the time from a region's reply to its round's end, plus the
    rounds' waits for availability (once per round, not per region).
    """
    ends = {s.round: s.end_s - s.start_s for s in clock.rounds}
    compute = transfer = waiting = 0.0
    for r in clock.regions:
        if r.kept:
            compute += r.compute_s
            transfer += r.download_s + r.upload_s
            waiting += max(0.0, ends.get(r.round, r.arrived_s) - r.arrived_s)
    return {
        "compute_s": round(compute, 6),
        "transfer_s": round(transfer, 6),
        "waiting_for_others_s": round(waiting, 6),
        "waiting_for_availability_s": round(sum(s.waited_s for s in clock.rounds), 6),
    }


def summary_fields(
    clock: SimClock,
    history: pd.DataFrame,
    *,
    target: str | None,
    server: tuple[float, float, str],
) -> dict[str, Any]:
    """The fields ``[geo]`` adds to summary.json."""
    end_s = {s.round: s.end_s for s in clock.rounds}
    end_s.setdefault(0, 0.0)
    to_target = Target.parse(target).time_to(history, end_s) if target else None
    return {
        "sim_total_s": round(clock.rounds[-1].end_s, 6) if clock.rounds else 0.0,
        "sim_time_to_target_s": None if to_target is None else round(to_target, 6),
        "geo": {
            "policy": clock.policy,
            "target": target,
            "server": {"lat": server[0], "lon": server[1], "source": server[2]},
            "flops_per_step": clock.flops_per_step,
            "time_split": time_split(clock),
            "places": {name: p.to_dict() for name, p in clock.places.items()},
        },
    }


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def regions_map_figure(
    places: Mapping[str, tuple[float, float]],
    server: tuple[float, float],
    final: Mapping[str, float],
    metric: str,
    waiting_share: Mapping[str, float],
) -> Figure:
    """Regions by longitude and latitude (points only, no map data): the final metric
    (left) and each region's share of round time spent waiting (right); the server a star."""
    fig = _figure(11.0, 4.2)
    names = sorted(places)
    lat = [places[n][0] for n in names]
    lon = [places[n][1] for n in names]
    panels = [
        (f"final test {metric}", [final.get(n, np.nan) for n in names], "viridis"),
        (
            "share of round time spent waiting",
            [waiting_share.get(n, np.nan) for n in names],
            "magma_r",
        ),
    ]
    for i, (title, values, cmap) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, 2, i)
        points = ax.scatter(lon, lat, c=values, cmap=cmap, s=60, edgecolors="black", linewidths=0.5)
        ax.scatter([server[1]], [server[0]], marker="*", s=220, c="red", label="server")
        for name, x, y in zip(names, lon, lat, strict=True):
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-90, 90)
        ax.set_xlabel("longitude")
        ax.set_ylabel("latitude")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        fig.colorbar(points, ax=ax, shrink=0.8)
    return fig


def metric_sim_hours_figure(
    history: pd.DataFrame, metric: str, end_s: Mapping[int, float]
) -> Figure:
    """The pooled metric (test, and server if any) against simulated hours at each round's end."""
    fig = _figure()
    ax = fig.add_subplot()
    h = history[(history.region == "all") & (history.metric == metric)]
    for split in ("test", "server"):
        rows = h[h.split == split].sort_values("round")
        hours = [end_s.get(int(r), np.nan) / 3600.0 for r in rows["round"]]
        if len(rows):
            ax.plot(hours, rows["value"], marker="o", markersize=3, label=f"{split} (pooled)")
    ax.set_xlabel("simulated hours")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against simulated time")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def waiting_shares(times: pd.DataFrame, lengths: Mapping[int, float]) -> dict[str, float]:
    """Each region's time waiting for its round's end / the length of its rounds.

    ``times`` is sim_times.csv; ``lengths`` maps a round to its length
    (``sim_end_s - sim_start_s``). A region not kept waits the whole round.
    """
    waited: dict[str, float] = {}
    total: dict[str, float] = {}
    for server_round, region, arrived, kept in zip(
        times["round"], times["region"], times["arrived_s"], times["kept"], strict=True
    ):
        length = float(lengths.get(int(server_round), 0.0))
        idle = max(0.0, length - float(arrived)) if kept and arrived == arrived else length
        total[region] = total.get(region, 0.0) + length
        waited[region] = waited.get(region, 0.0) + idle
    return {k: (waited[k] / total[k] if total[k] > 0 else 0.0) for k in total}


def final_metric(history: pd.DataFrame, metric: str) -> dict[str, float]:
    """Each region's test ``metric`` in the last round."""
    h = history[(history.split == "test") & (history.metric == metric)]
    if h.empty:
        return {}
    last = h[h["round"] == h["round"].max()]
    return {str(k): float(v) for k, v in zip(last.region, last.value, strict=True) if k != "all"}


def geo_figures(
    places: Mapping[str, tuple[float, float]],
    server: tuple[float, float],
    times: pd.DataFrame,
    rounds: pd.DataFrame,
    history: pd.DataFrame,
    metric: str,
) -> dict[str, Figure]:
    """``regions_map.png`` and ``<metric>_sim_hours.png`` by file name.

    ``times`` is sim_times.csv and ``rounds`` rounds.csv (with sim_start_s, sim_end_s).
    """
    end_s = {int(r): float(e) for r, e in zip(rounds["round"], rounds["sim_end_s"], strict=True)}
    lengths = {
        int(r): float(e - s)
        for r, s, e in zip(rounds["round"], rounds["sim_start_s"], rounds["sim_end_s"], strict=True)
    }
    return {
        "regions_map.png": regions_map_figure(
            places, server, final_metric(history, metric), metric, waiting_shares(times, lengths)
        ),
        f"{metric}_sim_hours.png": metric_sim_hours_figure(history, metric, end_s),
    }


def run_geo_figures(run_dir: Path, history: pd.DataFrame, metric: str) -> dict[str, Figure]:
    """:func:`geo_figures` of a finished run folder (empty without ``[geo]``)."""
    import json

    run_dir = Path(run_dir)
    summary_path = run_dir / "summary.json"
    if not (run_dir / "sim_times.csv").is_file() or not summary_path.is_file():
        return {}
    geo = json.loads(summary_path.read_text(encoding="utf-8")).get("geo")
    if not geo:
        return {}
    places = {name: (p["lat"], p["lon"]) for name, p in geo["places"].items()}
    server = (geo["server"]["lat"], geo["server"]["lon"])
    times = pd.read_csv(run_dir / "sim_times.csv")
    rounds = pd.read_csv(run_dir / "rounds.csv")
    return geo_figures(places, server, times, rounds, history, metric)


def write_geo_plots(
    clock: SimClock, rounds: pd.DataFrame, history: pd.DataFrame, metric: str, out: Path
) -> list[Path]:
    """The :func:`geo_figures` of a run's clock, saved as PNGs in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    places = {name: (p.lat, p.lon) for name, p in clock.places.items()}
    figures = geo_figures(places, clock.server, sim_times_frame(clock), rounds, history, metric)
    files = []
    for name, fig in figures.items():
        path = out / name
        fig.savefig(path)
        files.append(path)
    return files
