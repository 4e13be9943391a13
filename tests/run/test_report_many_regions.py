"""Plots and the HTML report stay readable at many regions (22, 194 and 10,000).

Synthetic histories (the plot functions only read the tidy table): past
MANY_REGIONS regions the by-region plot is a histogram with the worst and best
regions named, the rounds plot a band, and the report's table compact.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from fedglobal.config import load_config
from fedglobal.run import plots
from fedglobal.run.report import render_report
from fedglobal.run.results import Result

QUICKSTART = Path(__file__).resolve().parents[2] / "experiments" / "quickstart.toml"


def history(n: int, rounds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Test R² per region and round: region i's skill is fixed, so the worst is known."""
    rng = np.random.default_rng(seed)
    regions = [f"Region {i:05d}" for i in range(n)]
    skill = np.sort(rng.beta(5, 2, n))  # Region 00000 is the worst, the last the best
    frames = []
    for r in range(rounds + 1):
        value = skill * (1 - np.exp(-(r + 1) / 3))
        frames.append(
            pd.DataFrame(
                {"round": r, "region": regions, "split": "test", "metric": "r2", "value": value}
            )
        )
        pooled = [("test", "r2", float(value.mean())), ("test", "loss", 1 / (r + 1))]
        frames.append(
            pd.DataFrame(
                [(r, "all", s, m, v) for s, m, v in pooled],
                columns=["round", "region", "split", "metric", "value"],
            )
        )
    return pd.concat(frames, ignore_index=True)


def _png_size(fig, tmp_path: Path) -> tuple[int, int]:
    path = plots.save(fig, tmp_path / "figure.png")
    with Image.open(path) as image:
        return image.size


@pytest.mark.parametrize("n", [22, 194, 10_000])
def test_by_region_plot_keeps_its_size_and_names_the_extremes(n, tmp_path):
    h = history(n)
    fig = plots.final_by_region_figure(h, "r2")
    width, height = _png_size(fig, tmp_path)
    assert width == 700
    if n <= plots.MANY_REGIONS:
        assert height > 400  # one bar per region
        assert len(fig.axes[0].patches) == n
        return
    assert height <= 450  # the 194-region bar chart was 5552 pixels high
    texts = "\n".join(t.get_text() for t in fig.axes[0].texts)
    assert "worst: Region 00000" in texts
    assert f"best: Region {n - 1:05d}" in texts
    assert f"of {n} regions" in fig.axes[0].get_title()


@pytest.mark.parametrize("n", [22, 194, 10_000])
def test_rounds_plot_draws_a_band_past_a_few_dozen_regions(n, tmp_path):
    fig = plots.metric_rounds_figure(history(n), "r2")
    lines = fig.axes[0].get_lines()
    if n <= plots.MANY_REGIONS:
        assert len(lines) == n + 1  # each region and the pooled line
    else:
        assert len(lines) == 2  # the regions' median and the pooled line
        assert "regions p10-p90" in fig.axes[0].get_legend_handles_labels()[1]
    assert _png_size(fig, tmp_path) == (700, 400)


@pytest.mark.parametrize("n", [22, 194])
def test_report_region_table_is_compact_with_the_full_csv(n, tmp_path):
    config = load_config(QUICKSTART)
    result = Result(run_dir=tmp_path / f"run{n}", config=config, history=history(n))
    text = render_report([result])
    (table,) = re.findall(r'<table[^>]*class="dataframe regions">.*?</table>', text, re.S)
    assert "<th>metric</th>" not in table and "<th></th>" not in table  # no empty column
    rows = len(re.findall(r"<tr>\s*<td>", table))  # body rows
    if n <= plots.MANY_REGIONS:
        assert rows == n + 1  # every region and the pooled row
        assert "data:text/csv" not in text
        return
    assert rows == 1 + 5 + 1 + 5  # pooled, best 5, the gap, worst 5
    assert f"… {n - 10} more" in table
    assert "Region 00000" in table and f"Region {n - 1:05d}" in table
    (csv,) = re.findall(r'href="data:text/csv;base64,([^"]+)"', text)
    full = base64.b64decode(csv).decode("utf-8").splitlines()
    assert len(full) == 1 + n + 1  # header, pooled row, every region


@pytest.mark.slow
def test_report_at_194_regions_renders_in_headless_chromium(tmp_path):
    from tests.run.test_report_html import console_messages, run_chromium

    config = load_config(QUICKSTART)
    result = Result(run_dir=tmp_path / "run194", config=config, history=history(194))
    page = tmp_path / "report.html"
    page.write_text(render_report([result]), encoding="utf-8")
    shot = tmp_path / "report.png"
    _, err = run_chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400")
    assert console_messages(err) == []
    with Image.open(shot) as image:
        rgb = image.convert("RGB")
        # the page ends within the window: the last 300 rows of pixels are blank
        assert rgb.crop((0, 2100, 1280, 2400)).getcolors(maxcolors=4) is not None
        assert len(rgb.getcolors(maxcolors=1 << 20) or []) > 200
