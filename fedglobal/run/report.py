"""A self-contained HTML report comparing runs: tables and plots in one file.

``fedglobal report runs/a runs/b -o report.html`` (or :func:`write_report`)
writes one HTML file with no external resources (plots are inlined PNGs, no
scripts), so it can be mailed or attached to a paper's supplement:

- a table of the runs (strategy, model, data, regions, rounds, stop reason,
  wall time, bytes communicated);
- a table of final pooled metrics per run and split;
- comparison plots of the headline metric and the loss against rounds;
- per run: the final metrics of every region (past a few dozen regions, the
  best and worst five and the whole table as an inlined CSV download), the
  metric against rounds, the spread across regions and the final metric by
  region (past a few dozen regions, their distribution).
"""

from __future__ import annotations

import base64
import html
import io
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fedglobal.errors import RunError
from fedglobal.run import plots
from fedglobal.run.results import Result, load_run

__all__ = ["render_report", "write_report"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.7rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.55rem; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4rem 0; }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 0.6rem; }
.meta { color: #666; font-size: 0.85rem; }
table.runs td { text-align: left; }
"""


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(fig.axes[0].get_title() if fig.axes else "plot")}" ' + (
        f'src="data:image/png;base64,{data}">'
    )


def _table(frame: pd.DataFrame, css_class: str) -> str:
    return frame.reset_index().to_html(
        classes=css_class,
        border=0,
        index=False,
        na_rep="–",
        float_format=lambda v: f"{v:.4g}",
        escape=True,
    )


def _label(result: Result) -> str:
    return result.run_dir.name


def _mb(value: Any) -> str:
    return f"{float(value) / 1e6:.2f}" if isinstance(value, int | float) else "–"


def _runs_table(results: Sequence[Result]) -> pd.DataFrame:
    rows = []
    for r in results:
        s = r.summary
        stopped = s.get("stopped") or {}
        comm = s.get("comm") or {}
        rows.append(
            {
                "run": _label(r),
                "strategy": s.get("strategy", r.config.strategy.name),
                "model": s.get("model", r.config.model.name),
                "data": s.get("source", r.config.data.source).split("/")[-1],
                "task": s.get("task", r.config.data.task),
                "regions": s.get("num_regions", "–"),
                "rounds": s.get("rounds", "–"),
                "stopped early": stopped.get("reason", "no") if stopped else "no",
                "wall time (s)": round(float(s.get("wall_time_s", float("nan"))), 1),
                "MB sent": _mb(comm.get("bytes_sent")),
                "MB received": _mb(comm.get("bytes_received")),
            }
        )
    return pd.DataFrame(rows).set_index("run")


def _final_table(results: Sequence[Result]) -> pd.DataFrame:
    rows = {}
    for r in results:
        final = r.summary.get("final", {})
        row = {}
        for key, values in final.items():
            split, _, region = key.partition("/")
            if region == "all":
                row.update({f"{split} {metric}": value for metric, value in values.items()})
        fair = r.summary.get("fairness") or {}
        if fair:  # the worst-served regions (summary.json's fairness)
            worst = fair.get("worst_region") or {}
            row[f"worst region ({fair['metric']})"] = (
                f"{worst.get('name')}: {worst.get('value'):.4g}"
            )
            row[f"p10 region {fair['metric']}"] = fair.get("p10")
            row[f"median region {fair['metric']}"] = fair.get("median")
            row[f"spread of {fair['metric']}"] = fair.get("spread")
        rows[_label(r)] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    order = sorted(
        frame.columns,
        key=lambda c: ({"test": 0, "server": 1, "train": 2}.get(c.split()[0], 3), c),
    )
    frame = frame[order]
    frame.index.name = "run"
    return frame


def _region_table(result: Result) -> pd.DataFrame:
    h = result.history
    test = h[(h.split == "test") & (h["round"] == h["round"].max())]
    table = test.pivot_table(index="region", columns="metric", values="value", aggfunc="last")
    metric = plots.key_metric(result.config.data.task)
    if metric in table.columns:
        table = table.sort_values(metric, ascending=False)
    if "all" in table.index:  # the pooled row first
        table = pd.concat([table.loc[["all"]], table.drop(index="all")])
    table.index.name = "region"
    table.columns.name = None  # else to_html adds an empty "metric" column
    return table


#: Past MANY_REGIONS regions, the report lists this many best and worst regions.
SHOWN_REGIONS = 5


def _region_block(result: Result) -> str:
    """The final test metrics by region: all rows, or past a few dozen regions the
    pooled row, the best and worst :data:`SHOWN_REGIONS`, and the full table as CSV."""
    table = _region_table(result)
    regions = [r for r in table.index if r != "all"]
    if len(regions) <= plots.MANY_REGIONS:
        return f"<h3>Final test metrics by region</h3>{_table(table, 'regions')}"
    k = SHOWN_REGIONS
    gap = pd.DataFrame(index=pd.Index([f"… {len(regions) - 2 * k} more"], name="region"))
    pooled = table.loc[["all"]] if "all" in table.index else table.iloc[:0]
    compact = pd.concat([pooled, table.loc[regions[:k]], gap, table.loc[regions[-k:]]])
    compact.index.name = "region"
    csv = base64.b64encode(table.to_csv().encode("utf-8")).decode("ascii")
    name = html.escape(f"{_label(result)}-regions.csv")
    return (
        f"<h3>Final test metrics by region: best and worst {k} of {len(regions)}</h3>"
        f"{_table(compact, 'regions')}"
        f'<p class="meta">Every region: <a download="{name}" '
        f'href="data:text/csv;base64,{csv}">{name}</a> '
        "(also in the run folder's history.csv); their distribution is plotted below.</p>"
    )


def _run_section(result: Result) -> str:
    h = result.history
    metric = plots.key_metric(result.config.data.task)
    name = html.escape(_label(result))
    figures = [
        plots.metric_rounds_figure(h, metric),
        plots.region_spread_figure(h, metric),
        plots.final_by_region_figure(h, metric),
        plots.loss_figure(h),
    ]
    if (h.split == "server").any():
        figures.insert(1, plots.metric_rounds_figure(h, metric, split="server"))
    from fedglobal.geo.outputs import run_geo_figures  # [geo]: the map and simulated hours

    figures.extend(run_geo_figures(result.run_dir, h, metric).values())
    return (
        f'<section class="run" id="run-{name}"><h2>{name}</h2>'
        f'<p class="meta">{html.escape(str(result.run_dir))}</p>'
        f"{_region_block(result)}"
        f'<div class="plots">{"".join(_png(f) for f in figures)}</div></section>'
    )


def _comparison(results: Sequence[Result]) -> str:
    parts = []
    for task in dict.fromkeys(r.config.data.task for r in results):
        group = [(_label(r), r.history) for r in results if r.config.data.task == task]
        metric = plots.key_metric(task)
        parts.append(_png(plots.comparison_figure(group, metric)))
        parts.append(_png(plots.comparison_figure(group, "loss")))
    return f'<div class="plots">{"".join(parts)}</div>'


def render_report(results: Sequence[Result], *, title: str = "fedglobal report") -> str:
    """The report's HTML text for ``results``."""
    if not results:
        raise RunError("a report needs at least one run folder")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{len(results)} run(s), generated {stamp} by fedglobal.</p>',
        "<h2>Runs</h2>",
        _table(_runs_table(results), "runs"),
        "<h2>Final metrics (all regions pooled)</h2>",
        _table(_final_table(results), "final"),
        "<h2>Compared by round</h2>",
        _comparison(results),
        *(_run_section(r) for r in results),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{''.join(body)}</body></html>\n"
    )


def write_report(
    runs: Sequence[str | Path | Result], out: str | Path, *, title: str = "fedglobal report"
) -> Path:
    """Write the HTML report comparing ``runs`` (run folders or Results) to ``out``."""
    results = [r if isinstance(r, Result) else load_run(r) for r in runs]
    out = Path(out)
    if out.is_dir():
        raise RunError(f"report output {str(out)!r} is a directory; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(results, title=title)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out
