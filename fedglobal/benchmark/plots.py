"""Benchmark plots (matplotlib, Agg backend: no display needed).

- ``curves.png``: the headline test metric (pooled over regions) by round, one
  line per strategy (mean over seeds, band from the lowest to the highest
  seed), one panel per dataset (columns) and condition (rows). Baselines are
  dashed (local only) and dotted (centralised).
- ``loss.png``: the same for the pooled test loss.
- ``regions.png``: the per-region spread of the final headline metric: one box
  per strategy (each region's value averaged over seeds, drawn as points too),
  one panel per dataset and condition.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.benchmark.suite import Suite

__all__ = ["write_plots"]

log = logging.getLogger(__name__)

_STYLE = {"local-only": "--", "centralised": ":"}


def _pyplot() -> Any:
    """pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _grid(suite: Suite, results: pd.DataFrame) -> tuple[list[str], list[str]]:
    datasets = [d.label for d in suite.datasets if (results["dataset"] == d.label).any()]
    conditions = [c.label for c in suite.conditions if (results["condition"] == c.label).any()]
    return datasets, conditions


def _colors(suite: Suite) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {s.label: cmap(i % 10) for i, s in enumerate(suite.strategies)}


def _curves(suite: Suite, results: pd.DataFrame, column: str, path: Path, ylabel: str) -> None:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    ok = results[results.status == "ok"]
    datasets, conditions = _grid(suite, ok)
    if not datasets:
        return
    colors = _colors(suite)
    kinds = dict(zip(ok.strategy, ok.kind, strict=False))
    width = max(4.2 * len(datasets), 7.0)
    fig, axes = plt.subplots(
        len(conditions),
        len(datasets),
        figsize=(width, 3.2 * len(conditions) + 0.9),
        squeeze=False,
        sharex=True,
    )
    for i, condition in enumerate(conditions):
        for j, dataset in enumerate(datasets):
            ax = axes[i][j]
            cell = ok[(ok.dataset == dataset) & (ok.condition == condition)]
            metric = next(iter(cell.metric.dropna()), "") if len(cell) else ""
            for strategy in [s.label for s in suite.strategies]:
                runs = cell[cell.strategy == strategy]
                if runs.empty:
                    continue
                by_round = runs.groupby("round")[column]
                mean = by_round.mean()
                ax.plot(
                    mean.index,
                    mean.to_numpy(),
                    label=strategy,
                    color=colors[strategy],
                    linestyle=_STYLE.get(kinds.get(strategy, ""), "-"),
                    linewidth=1.6,
                )
                if runs.seed.nunique() > 1:
                    ax.fill_between(
                        mean.index,
                        by_round.min().to_numpy(),
                        by_round.max().to_numpy(),
                        color=colors[strategy],
                        alpha=0.15,
                        linewidth=0,
                    )
            title = dataset if condition == "-" else f"{dataset} | {condition}"
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if i == len(conditions) - 1:
                ax.set_xlabel("round")
            ax.set_ylabel(ylabel.format(metric=metric or "metric"), fontsize=8)
            if column == "test_loss" and len(cell) and (cell[column] > 0).all():
                ax.set_yscale("log")
    handles, labels = [], []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    ncol = max(1, min(len(labels), int(width // 1.9)))
    rows = -(-len(labels) // ncol)
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8)
    fig.suptitle(f"{suite.name}: mean over seeds (band: min-max)", fontsize=10)
    bottom = min(0.3, (0.25 * rows + 0.1) / fig.get_figheight())
    fig.tight_layout(rect=(0, bottom, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _regions(suite: Suite, cells: Sequence[Any], path: Path) -> None:
    plt = _pyplot()
    ok = [c for c in cells if c.ok and c.final_regions]
    if not ok:
        return
    frame = pd.DataFrame(
        [
            {
                "dataset": c.cell.dataset.label,
                "condition": c.cell.condition.label,
                "strategy": c.cell.strategy.label,
                "seed": c.cell.seed,
                "region": region,
                "value": value,
                "metric": c.metric,
            }
            for c in ok
            for region, value in c.final_regions.items()
        ]
    )
    datasets, conditions = _grid(suite, frame)
    colors = _colors(suite)
    order = [s.label for s in suite.strategies]
    width = max(max(4.2, 0.7 * len(order) + 1.5) * len(datasets), 7.0)
    fig, axes = plt.subplots(
        len(conditions),
        len(datasets),
        figsize=(width, 3.4 * len(conditions) + 0.6),
        squeeze=False,
    )
    for i, condition in enumerate(conditions):
        for j, dataset in enumerate(datasets):
            ax = axes[i][j]
            sub = frame[(frame.dataset == dataset) & (frame.condition == condition)]
            per_region = sub.groupby(["strategy", "region"])["value"].mean().reset_index()
            present = [s for s in order if (per_region.strategy == s).any()]
            data = [per_region[per_region.strategy == s]["value"].to_numpy() for s in present]
            if data:
                box = ax.boxplot(data, patch_artist=True, widths=0.6, showfliers=False)
                for patch, s in zip(box["boxes"], present, strict=True):
                    patch.set_facecolor(colors[s])
                    patch.set_alpha(0.35)
                rng = np.random.default_rng(0)
                for k, values in enumerate(data, start=1):
                    x = k + rng.uniform(-0.15, 0.15, size=len(values))
                    ax.scatter(x, values, s=8, color="black", alpha=0.6, zorder=3)
                ax.set_xticks(range(1, len(present) + 1))
                ax.set_xticklabels(present, rotation=30, ha="right", fontsize=7)
            metric = next(iter(sub.metric), "metric")
            title = dataset if condition == "-" else f"{dataset} | {condition}"
            ax.set_title(title, fontsize=9)
            ax.set_ylabel(f"final {metric} per region", fontsize=8)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{suite.name}: per-region spread (each region averaged over seeds)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(suite: Suite, results: pd.DataFrame, cells: Sequence[Any], out: Path) -> list[Path]:
    """Write the plots into ``out``; returns the files written (a failed plot is logged)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    jobs = [
        ("curves.png", lambda p: _curves(suite, results, "value", p, "test {metric}")),
        ("loss.png", lambda p: _curves(suite, results, "test_loss", p, "test loss")),
        ("regions.png", lambda p: _regions(suite, cells, p)),
    ]
    for name, job in jobs:
        path = out / name
        try:
            if "status" in results and (results.status == "ok").any():
                job(path)
        except Exception as exc:  # a plot must never lose the results table
            log.warning("could not draw %s: %s", name, exc)
            print(f"fedglobal benchmark: could not draw {name}: {exc}")
        if path.is_file():
            written.append(path)
    return written
