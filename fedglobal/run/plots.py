"""Plots of a run's history (matplotlib, Agg; no pyplot state, safe in any thread).

Every function takes the tidy history DataFrame (round, region, split, metric,
value) and returns a ``matplotlib.figure.Figure``; :func:`write_run_plots`
saves the standard set as PNGs into ``<run>/plots/``:

- ``<metric>_rounds.png``: the metric against rounds, all regions pooled
  (bold) and each region (thin);
- ``<metric>_spread.png``: the spread of the per-region metric each round
  (box plots: median, quartiles, whiskers at 1.5 IQR, outliers; past
  :data:`MANY_REGIONS` regions, whiskers at p5 and p95 without outliers);
- ``<metric>_by_region.png``: the final metric of each region, sorted, as a
  bar chart coloured by value (a map-like view); past :data:`MANY_REGIONS`
  regions, a histogram of the regions' values with the worst and best named
  (and ``<metric>_rounds.png`` shows the regions' p10-p90 band and median
  instead of one line each);
- ``loss_rounds.png``: pooled train and test loss (and server loss, if any).

The metric is R² for regression and accuracy for classification.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "MANY_REGIONS",
    "comparison_figure",
    "final_by_region",
    "final_by_region_figure",
    "final_distribution_figure",
    "key_metric",
    "loss_figure",
    "metric_rounds_figure",
    "region_spread_figure",
    "write_run_plots",
]

ALL = "all"
#: Past this many regions a plot shows their distribution, not one mark per region.
MANY_REGIONS = 40
_LABELS = {"r2": "R²", "mae": "MAE", "rmse": "RMSE", "f1": "F1 (macro)"}


def key_metric(task: str) -> str:
    """The headline metric of a task: ``r2`` for regression, ``accuracy`` for classification."""
    return "r2" if task == "regression" else "accuracy"


def _label(metric: str) -> str:
    return _LABELS.get(metric, metric.capitalize())


def _figure(width: float = 7.0, height: float = 4.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _rounds_axis(ax: Axes) -> None:
    ax.set_xlabel("round")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _series(history: pd.DataFrame, metric: str, split: str) -> pd.DataFrame:
    h = history[(history.metric == metric) & (history.split == split)]
    return h.pivot_table(index="round", columns="region", values="value", aggfunc="last")


def metric_rounds_figure(
    history: pd.DataFrame, metric: str, *, split: str = "test", title: str = ""
) -> Figure:
    """The metric against rounds: pooled (bold) and per region (thin, labelled if few)."""
    fig = _figure()
    ax = fig.add_subplot()
    table = _series(history, metric, split)
    regions = [c for c in table.columns if c != ALL]
    if len(regions) > MANY_REGIONS:  # a band, not thousands of lines
        values = table[regions].to_numpy(dtype=float)
        finite = np.where(np.isfinite(values), values, np.nan)
        with np.errstate(all="ignore"):
            low, mid, high = np.nanpercentile(finite, [10, 50, 90], axis=1)
        ax.fill_between(
            table.index, low, high, color="#4a6f96", alpha=0.25, label="regions p10-p90"
        )
        ax.plot(table.index, mid, color="#4a6f96", linewidth=1.2, label="regions median")
    else:
        for region in regions:
            ax.plot(
                table.index,
                table[region],
                linewidth=0.9,
                alpha=0.55,
                label=region if len(regions) <= 8 else None,
            )
    if ALL in table.columns:
        ax.plot(table.index, table[ALL], color="black", linewidth=2.5, label="all regions pooled")
    _rounds_axis(ax)
    ax.set_ylabel(f"{split} {_label(metric)}")
    ax.set_title(title or f"{split} {_label(metric)} by round")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    return fig


def region_spread_figure(
    history: pd.DataFrame, metric: str, *, split: str = "test", title: str = ""
) -> Figure:
    """Box plots of the per-region metric for each round (the spread across regions)."""
    fig = _figure()
    ax = fig.add_subplot()
    table = _series(history, metric, split)
    regions = [c for c in table.columns if c != ALL]
    rounds = list(table.index)
    if len(rounds) > 30:  # keep the boxes readable: every k-th round, and the last one
        step = int(np.ceil(len(rounds) / 30))
        rounds = sorted(set(rounds[::step]) | {rounds[-1]})
    data = [table.loc[r, regions].dropna().to_numpy() for r in rounds]
    if regions and any(len(d) for d in data):
        ax.boxplot(
            data,
            positions=range(len(rounds)),
            widths=0.6,
            patch_artist=True,
            boxprops={"facecolor": "#cfe0f3", "edgecolor": "#4a6f96"},
            medianprops={"color": "#c0392b"},
            # many regions: whiskers at p5 and p95, no single-region marks
            whis=(5, 95) if len(regions) > MANY_REGIONS else 1.5,
            showfliers=len(regions) <= MANY_REGIONS,
        )
        ax.set_xticks(range(len(rounds)), [str(r) for r in rounds])
    if ALL in table.columns:
        ax.plot(
            range(len(rounds)),
            table.loc[rounds, ALL].to_numpy(),
            color="black",
            marker="o",
            linewidth=1.5,
            label="all regions pooled",
        )
        ax.legend(fontsize=8, loc="best")
    ax.set_xlabel("round")
    ax.set_ylabel(f"{split} {_label(metric)} per region")
    ax.set_title(title or f"Spread of {split} {_label(metric)} across {len(regions)} regions")
    ax.grid(alpha=0.3, axis="y")
    return fig


def final_by_region(history: pd.DataFrame, metric: str, split: str = "test") -> pd.Series:
    """The final round's metric of each region (not the pooled one), sorted ascending."""
    h = history[(history.metric == metric) & (history.split == split) & (history.region != ALL)]
    final = h[h["round"] == h["round"].max()] if not h.empty else h
    return final.groupby("region")["value"].last().sort_values()


def final_by_region_figure(
    history: pd.DataFrame, metric: str, *, split: str = "test", title: str = ""
) -> Figure:
    """The final round's metric per region.

    Up to :data:`MANY_REGIONS` regions: sorted horizontal bars coloured by value.
    More: a histogram of the regions' values with the worst and best named
    (:func:`final_distribution_figure`), so the picture keeps its size.
    """
    values = final_by_region(history, metric, split)
    if len(values) > MANY_REGIONS:
        return final_distribution_figure(history, metric, split=split, title=title)
    h = history[(history.metric == metric) & (history.split == split) & (history.region != ALL)]
    final = h[h["round"] == h["round"].max()] if not h.empty else h
    fig = _figure(7.0, max(3.0, 0.28 * len(values) + 1.2))
    ax = fig.add_subplot()
    if not values.empty:
        finite = values.replace([np.inf, -np.inf], np.nan)
        lo, hi = float(np.nanmin(finite)), float(np.nanmax(finite))
        span = hi - lo if hi > lo else 1.0
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        colors = [cmap((v - lo) / span) if np.isfinite(v) else "lightgrey" for v in values]
        ax.barh(values.index.astype(str), values.to_numpy(), color=colors)
        for y, v in enumerate(values.to_numpy()):
            ax.annotate(
                f"{v:.3g}",
                (max(v, 0.0) if np.isfinite(v) else 0.0, y),  # right of the bar or of zero
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        sm = matplotlib.cm.ScalarMappable(cmap=cmap, norm=matplotlib.colors.Normalize(lo, hi))
        fig.colorbar(sm, ax=ax, label=_label(metric))
        pooled = history[
            (history.metric == metric) & (history.split == split) & (history.region == ALL)
        ]
        if not pooled.empty:
            ax.axvline(float(pooled.iloc[-1].value), color="black", linestyle="--", linewidth=1)
        spread = finite.dropna().to_numpy(dtype=float)
        if spread.size:  # summary.json's fairness: the median region and the 10th percentile
            ax.axvline(float(np.median(spread)), color="#c0392b", linestyle="-.", linewidth=1)
            ax.axvline(
                float(np.percentile(spread, 10)), color="#c0392b", linestyle=":", linewidth=1
            )
    ax.set_xlabel(f"final {split} {_label(metric)}")
    last = int(final["round"].max()) if not final.empty else 0
    ax.set_title(
        title
        or f"{split} {_label(metric)} by region after round {last}\n"
        "(--- pooled, -·- median region, ··· 10th percentile)"
    )
    ax.tick_params(axis="y", labelsize=8)
    return fig


def final_distribution_figure(
    history: pd.DataFrame, metric: str, *, split: str = "test", title: str = "", named: int = 3
) -> Figure:
    """A histogram of the final metric over regions; the ``named`` worst and best are listed."""
    values = final_by_region(history, metric, split)
    finite = values[np.isfinite(values.to_numpy(dtype=float))]
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    if not finite.empty:
        bins = int(np.clip(np.sqrt(len(finite)), 10, 60))
        ax.hist(finite.to_numpy(), bins=bins, color="#4a6f96", alpha=0.85)
        ax.axvline(float(finite.median()), color="#c0392b", linewidth=1.2, label="median region")
        ax.axvline(
            float(np.percentile(finite.to_numpy(dtype=float), 10)),
            color="#c0392b",
            linestyle=":",
            linewidth=1.2,
            label="10th percentile",
        )
        pooled = history[
            (history.metric == metric) & (history.split == split) & (history.region == ALL)
        ]
        if not pooled.empty:
            ax.axvline(
                float(pooled.iloc[-1].value),
                color="black",
                linestyle="--",
                linewidth=1,
                label="all regions pooled",
            )
        k = min(named, len(finite) // 2) or 1

        def shown(part: pd.Series) -> str:
            return ", ".join(f"{_short(str(r))} {v:.3g}" for r, v in part.items())

        lines = [f"worst: {shown(finite.iloc[:k])}", f"best: {shown(finite.iloc[::-1][:k])}"]
        if len(finite) < len(values):
            lines.append(f"{len(values) - len(finite)} region(s) without a finite value")
        ax.text(
            0.01,
            0.98,
            "\n".join(lines),
            transform=ax.transAxes,
            va="top",
            fontsize=7.5,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#ccc"},
        )
        ax.legend(fontsize=8, loc="center left")
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # room for the names
    last = int(history["round"].max()) if not history.empty else 0
    ax.set_xlabel(f"final {split} {_label(metric)}")
    ax.set_ylabel("regions")
    ax.set_title(title or f"{split} {_label(metric)} of {len(values)} regions after round {last}")
    ax.grid(alpha=0.3, axis="y")
    return fig


def _short(name: str, width: int = 22) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def loss_figure(history: pd.DataFrame, *, title: str = "") -> Figure:
    """Pooled loss against rounds for each split (train, test, server)."""
    fig = _figure()
    ax = fig.add_subplot()
    pooled = history[(history.region == ALL) & (history.metric == "loss")]
    for split, rows in pooled.groupby("split"):
        ax.plot(rows["round"], rows["value"], marker=".", label=str(split))
    _rounds_axis(ax)
    ax.set_ylabel("loss (all regions pooled)")
    ax.set_title(title or "Loss by round")
    ax.grid(alpha=0.3)
    if not pooled.empty:
        ax.legend(fontsize=8)
    return fig


def comparison_figure(
    histories: Sequence[tuple[str, pd.DataFrame]], metric: str, *, split: str = "test"
) -> Figure:
    """The pooled metric against rounds for several runs, one line each."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, history in histories:
        rows = history[
            (history.region == ALL) & (history.metric == metric) & (history.split == split)
        ]
        if not rows.empty:
            ax.plot(rows["round"], rows["value"], marker=".", label=name)
    _rounds_axis(ax)
    ax.set_ylabel(f"{split} {_label(metric)} (all regions pooled)")
    ax.set_title(f"{split} {_label(metric)}: runs compared")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def save(fig: Figure, path: Path) -> Path:
    """Save a figure as PNG (written to a temporary name, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def write_run_plots(history: pd.DataFrame, task: str, out_dir: Path) -> list[Path]:
    """Write the standard plots of a run into ``out_dir``; returns the files written."""
    metric = key_metric(task)
    if history.empty:
        return []
    return [
        save(metric_rounds_figure(history, metric), out_dir / f"{metric}_rounds.png"),
        save(region_spread_figure(history, metric), out_dir / f"{metric}_spread.png"),
        save(final_by_region_figure(history, metric), out_dir / f"{metric}_by_region.png"),
        save(loss_figure(history), out_dir / "loss_rounds.png"),
    ]
