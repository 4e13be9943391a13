"""The HTML report: self-contained, renders in headless Chromium without console errors."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from fedglobal.cli.main import main as cli_main
from fedglobal.run.report import write_report

pytestmark = pytest.mark.slow

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]
CONSOLE = re.compile(r":CONSOLE[:(]|CONSOLE\(\d+\)")


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "Chromium is not installed (Debian package 'chromium'; `make test` installs it when "
        "run as root): cannot render the report"
    )


def run_chromium(page: Path, tmp: Path, *args: str, timeout: float = 90) -> tuple[str, str]:
    """Run headless Chromium on ``page`` with a fresh profile; (stdout, stderr).

    Chromium runs in its own process group, which is ended on every path.
    """
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    profile.mkdir()
    command = [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        else:  # helpers it left behind in its group, if any
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert process.returncode == 0, err[-2000:]
    return out, err


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if CONSOLE.search(line)]


@pytest.fixture(scope="module")
def report(tiny_runs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    return write_report([tiny_runs.fedavg.run_dir, tiny_runs.fedper.run_dir], out)


def test_report_is_self_contained(report: Path, tiny_runs):
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "<script" not in text
    sources = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert sources and all(s.startswith("data:") for s in sources)
    assert text.count("data:image/png;base64,") >= 2 + 2 * 4
    for result in (tiny_runs.fedavg, tiny_runs.fedper):
        assert result.run_dir.name in text


def test_report_shows_the_worst_served_regions(report: Path, tiny_runs):
    """summary.json's fairness (worst region, p10, median, spread) is in the report."""
    text = report.read_text(encoding="utf-8")
    for result in (tiny_runs.fedavg, tiny_runs.fedper):
        fair = result.summary["fairness"]
        metric = fair["metric"]
        for column in (f"worst region ({metric})", f"p10 region {metric}", f"spread of {metric}"):
            assert column in text
        assert f"{fair['worst_region']['name']}: {fair['worst_region']['value']:.4g}" in text


def test_report_renders_in_headless_chromium(report: Path, tmp_path: Path):
    from PIL import Image

    shot = tmp_path / "report.png"
    _, err = run_chromium(report, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert shot.is_file()
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 200  # tables and plots, not a blank page
    assert console_messages(err) == []

    dom, err = run_chromium(report, tmp_path, "--dump-dom")
    assert console_messages(err) == []
    assert dom.count("<table") == 4  # runs, final metrics, one per run by region
    for css_class in ("runs", "final", "regions"):
        assert f'class="dataframe {css_class}"' in dom
    assert "Final metrics (all regions pooled)" in dom
    assert re.search(r"<td>north</td>", dom)
    assert dom.count("<img") >= 10


def test_the_console_check_catches_errors(tmp_path: Path):
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
        "<table><tr><td>x</td></tr></table>"
        '<script>console.error("broken-marker"); notDefined();</script></body></html>'
    )
    _, err = run_chromium(page, tmp_path, "--dump-dom")
    messages = console_messages(err)
    assert any("broken-marker" in m for m in messages)
    assert any("notDefined" in m for m in messages)


def test_cli_report_expands_a_folder_of_runs(run_copy, tmp_path: Path, capsys):
    runs = [run_copy("fedavg"), run_copy("fedper")]  # both in tmp_path
    out = tmp_path / "all.html"
    assert cli_main(["report", str(tmp_path), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("report:") and "(2 runs)" in printed
    text = out.read_text()
    assert all(run.name in text for run in runs)


def test_cli_report_errors_are_one_line(tmp_path: Path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in (
        ([str(tmp_path / "nope")], "no such run folder"),
        ([str(empty)], "is not a run folder"),
    ):
        assert cli_main(["report", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("fedglobal: error:") and message in err
        assert len(err.strip().splitlines()) == 1
