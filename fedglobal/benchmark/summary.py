"""Summary tables of a benchmark: one row per (dataset, condition, strategy), over seeds.

Columns (``summary.csv``; ``summary.md`` shows the same, formatted, one table
per dataset):

- ``metric``: the dataset's headline metric (pooled test accuracy, R², ...);
- ``final_mean``/``final_std``: its value after the last round, mean and
  standard deviation (ddof 1) over the seeds that finished;
- ``best_mean``/``best_std``: its best value over rounds 1..R;
- ``final_loss_*``/``best_loss_*``: the same for the pooled test loss;
- ``rounds_to_target``: the first round whose value reaches the target
  (>= for accuracy-like metrics, <= for loss-like ones), averaged over the
  seeds that reached it; ``reached`` says how many did;
- ``loss_increases``: rounds whose pooled test loss rose over the previous
  round, mean over seeds (a measure of unstable training; 0 is monotone);
- ``worst_region_*``/``mean_region_*``: the final value of the worst region
  and the unweighted mean over regions (each region on its own test split);
- ``bytes_per_round``: weights on the wire per training round (see
  :mod:`fedglobal.benchmark.runner`); ``wall_time_s`` and ``cpu_time_s``: per
  run (the whole run: data, rounds, run folder), mean over seeds. CPU time
  counts every thread of the process and, unlike wall time, hardly depends on
  what else the machine is running;
- ``runs_ok``/``runs``; ``status`` (ok, partial, failed) and the first ``error``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedglobal.benchmark.suite import LOWER_IS_BETTER, Suite

__all__ = [
    "SUMMARY_COLUMNS",
    "format_markdown",
    "markdown_table",
    "summary_table",
    "write_summary",
]

SUMMARY_COLUMNS = [
    "dataset",
    "condition",
    "strategy",
    "kind",
    "metric",
    "target",
    "runs_ok",
    "runs",
    "final_mean",
    "final_std",
    "best_mean",
    "best_std",
    "final_loss_mean",
    "final_loss_std",
    "best_loss_mean",
    "best_loss_std",
    "rounds_to_target",
    "reached",
    "loss_increases",
    "worst_region_mean",
    "worst_region_std",
    "mean_region_mean",
    "mean_region_std",
    "bytes_per_round",
    "wall_time_s",
    "cpu_time_s",
    "status",
    "error",
]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def rounds_to_target(values: pd.Series, target: float | None, metric: str) -> float:
    """The first round (>= 1) whose value reaches ``target``; NaN if never."""
    if target is None:
        return math.nan
    series = values[values.index > 0]
    hit = series <= target if metric in LOWER_IS_BETTER else series >= target
    return float(hit.idxmax()) if hit.any() else math.nan


def summary_table(suite: Suite, cells: Sequence[Any]) -> pd.DataFrame:
    """The summary rows (see the module docstring) of finished :class:`CellResult` s."""
    groups: dict[tuple[str, str, str], list[Any]] = {}
    for c in cells:
        key = (c.cell.dataset.label, c.cell.condition.label, c.cell.strategy.label)
        groups.setdefault(key, []).append(c)
    rows = []
    for (dataset_label, condition, strategy), runs in groups.items():
        first = runs[0]
        dataset = first.cell.dataset
        ok = [r for r in runs if r.ok]
        metric = next((r.metric for r in runs if r.metric), "")
        target = suite.target_for(dataset)
        lower = metric in LOWER_IS_BETTER
        finals, bests, floss, bloss, reach, worst, mean_region = [], [], [], [], [], [], []
        walls, cpus, nbytes, ups = [], [], [], []
        for r in ok:
            rows_ = r.rows.set_index("round")
            value = rows_["value"]
            trained = value[value.index > 0] if (value.index > 0).any() else value
            finals.append(float(value.iloc[-1]))
            bests.append(float(trained.min() if lower else trained.max()))
            loss = rows_["test_loss"]
            trained_loss = loss[loss.index > 0] if (loss.index > 0).any() else loss
            floss.append(float(loss.iloc[-1]))
            ups.append(float((trained_loss.diff().dropna() > 0).sum()))
            bloss.append(float(trained_loss.min()))
            reach.append(rounds_to_target(value, target, metric))
            worst.append(float(rows_["region_worst"].iloc[-1]))
            mean_region.append(float(rows_["region_mean"].iloc[-1]))
            walls.append(r.wall_time_s)
            cpus.append(getattr(r, "cpu_time_s", math.nan))
            nbytes.append(r.bytes_per_round)
        reached = [x for x in reach if np.isfinite(x)]
        status = "ok" if len(ok) == len(runs) else ("failed" if not ok else "partial")
        errors = [r.error for r in runs if not r.ok]
        fm, fs = _mean_std(finals)
        bm, bs = _mean_std(bests)
        lm, ls = _mean_std(floss)
        blm, bls = _mean_std(bloss)
        wm, ws = _mean_std(worst)
        mm, ms = _mean_std(mean_region)
        rows.append(
            {
                "dataset": dataset_label,
                "condition": condition,
                "strategy": strategy,
                "kind": first.cell.strategy.kind,
                "metric": metric,
                "target": target if target is not None else math.nan,
                "runs_ok": len(ok),
                "runs": len(runs),
                "final_mean": fm,
                "final_std": fs,
                "best_mean": bm,
                "best_std": bs,
                "final_loss_mean": lm,
                "final_loss_std": ls,
                "best_loss_mean": blm,
                "best_loss_std": bls,
                "rounds_to_target": float(np.mean(reached)) if reached else math.nan,
                "reached": len(reached),
                "loss_increases": _mean_std(ups)[0],
                "worst_region_mean": wm,
                "worst_region_std": ws,
                "mean_region_mean": mm,
                "mean_region_std": ms,
                "bytes_per_round": _mean_std(nbytes)[0] if nbytes else math.nan,
                "wall_time_s": _mean_std(walls)[0],
                "cpu_time_s": _mean_std(cpus)[0],
                "status": status,
                "error": errors[0] if errors else "",
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def _pm(mean: float, std: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "—"
    if not np.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _bytes(value: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    if value == 0:
        return "0"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


def _strategy_cell(row: pd.Series) -> str:
    kind = row["kind"]
    if kind == "local-only":
        return f"{row['strategy']} *(baseline: each region alone)*"
    if kind == "centralised":
        return f"{row['strategy']} *(reference: pooled data)*"
    return str(row["strategy"])


def format_markdown(suite: Suite, table: pd.DataFrame, *, wall_time_s: float | None = None) -> str:
    """The summary as Markdown: one table per dataset, then the definitions."""
    lines = [f"# Benchmark `{suite.name}`{' (full scale)' if suite.full else ''}", ""]
    if suite.description:
        lines += [suite.description.strip(), ""]
    seeds = ", ".join(str(s) for s in suite.seeds)
    lines += [f"Seeds: {seeds}. Values are mean ± std over seeds (std needs 2+ seeds).", ""]
    if wall_time_s is not None:
        total_cpu = float(np.nansum(table["cpu_time_s"] * table["runs_ok"])) if len(table) else 0.0
        lines += [
            f"Total wall time: {wall_time_s:.0f} s (CPU time of the runs: {total_cpu:.0f} s).",
            "",
        ]
    show_condition = (table["condition"] != "-").any() if len(table) else False
    for dataset, rows in table.groupby("dataset", sort=False):
        metric = next((m for m in rows["metric"] if m), "metric")
        target = rows["target"].iloc[0]
        head = f"## {dataset}: test {metric}"
        if np.isfinite(target):
            head += f" (target {target:g})"
        lines += [head, ""]
        cols = ["condition"] if show_condition else []
        cols += [
            "strategy",
            f"final {metric}",
            f"best {metric}",
            "final loss",
            "best loss",
        ]
        if np.isfinite(target):
            cols.append(f"rounds to {target:g}")
        cols += [
            "loss ↑ rounds",
            f"worst region {metric}",
            f"mean region {metric}",
            "bytes/round",
            "wall s",
            "cpu s",
            "runs",
        ]
        lines.append("| " + " | ".join(cols) + " |")
        lines.append("|" + "|".join("---" for _ in cols) + "|")
        for _, row in rows.iterrows():
            cells = [str(row["condition"])] if show_condition else []
            cells.append(_strategy_cell(row))
            if row["runs_ok"] == 0:
                error = str(row["error"]).replace("|", "\\|")
                blanks = [""] * (len(cols) - len(cells) - 2)
                cells += [f"**failed**: {error}", *blanks, f"0/{row['runs']}"]
                lines.append("| " + " | ".join(cells) + " |")
                continue
            cells += [
                _pm(row["final_mean"], row["final_std"]),
                _pm(row["best_mean"], row["best_std"]),
                _pm(row["final_loss_mean"], row["final_loss_std"]),
                _pm(row["best_loss_mean"], row["best_loss_std"]),
            ]
            if np.isfinite(target):
                reached = int(row["reached"])
                rt = row["rounds_to_target"]
                cells.append(
                    f"{rt:.1f} ({reached}/{row['runs_ok']})"
                    if reached
                    else f"— (0/{row['runs_ok']})"
                )
            cells += [
                f"{row['loss_increases']:.1f}",
                _pm(row["worst_region_mean"], row["worst_region_std"]),
                _pm(row["mean_region_mean"], row["mean_region_std"]),
                _bytes(row["bytes_per_round"]),
                f"{row['wall_time_s']:.1f}",
                f"{row['cpu_time_s']:.1f}" if np.isfinite(row["cpu_time_s"]) else "—",
                f"{row['runs_ok']}/{row['runs']}"
                + (f" ({row['error']})" if row["status"] == "partial" else ""),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "Definitions: *final* is after the last round, *best* the best over rounds 1..R, both",
        "on the pooled test split of all regions. *Worst/mean region*: the final value of the",
        "worst region and the unweighted mean over regions, each on its own test split.",
        "*Rounds to target*: first round reaching the target, mean over the seeds that did",
        "(how many in brackets). *loss ↑ rounds*: rounds whose test loss rose (instability).",
        "*bytes/round*: bytes on the wire per training round (all records of every message,",
        "measured by the ServerApp; or computed as model size x weight-carrying messages);",
        "*wall s* / *cpu s*: per run, mean over seeds (CPU time counts all threads).",
        "local-only sends nothing; centralised pools raw rows instead (n/a).",
        "Local-only and centralised are baselines with the same model, data, initial weights",
        "and local work per round; centralised pools the data and is a reference only.",
        "",
    ]
    return "\n".join(lines)


def write_summary(
    suite: Suite,
    table: pd.DataFrame,
    out: Path,
    *,
    wall_time_s: float | None = None,
    cells: Sequence[Any] = (),
) -> None:
    """Write ``summary.csv`` and ``summary.md`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "summary.csv", index=False)
    text = format_markdown(suite, table, wall_time_s=wall_time_s)
    notes = [f"- {c.cell.key}: {', '.join(c.notes)}" for c in cells if getattr(c, "notes", None)]
    if notes:
        text += (
            "\nRun notes (replies the strategy did not aggregate):\n\n" + "\n".join(notes) + "\n"
        )
    (out / "summary.md").write_text(text, encoding="utf-8")


def markdown_table(frame: pd.DataFrame) -> str:
    """Any ``frame`` as a Markdown table: floats to 4 significant digits, missing as –."""

    def cell(value: Any) -> str:
        if value is None or (isinstance(value, float) and value != value):
            return "–"
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines)
