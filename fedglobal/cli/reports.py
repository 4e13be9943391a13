"""Command-line tools around finished runs: ``report``, ``export`` and ``tensorboard``.

fedglobal report runs/quickstart-20260101-120000 runs/other-... -o report.html
fedglobal report runs/                       # every run folder under runs/
fedglobal export runs/quickstart-... --format tflite [--region "Western Europe"]
fedglobal tensorboard runs/ [--port 6006]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from fedglobal.cli.engines import port
from fedglobal.errors import RunError

__all__ = ["COMMANDS", "add_commands", "expand_runs", "run_command"]

COMMANDS = ("report", "export", "tensorboard")


def add_commands(sub: Any) -> None:
    """Add the ``report``, ``export`` and ``tensorboard`` sub-commands to ``sub``."""
    report = sub.add_parser("report", help="write an HTML report comparing runs")
    report.add_argument("runs", nargs="+", help="run folders, or folders that contain run folders")
    report.add_argument("-o", "--output", default="report.html", help="the HTML file to write")
    report.add_argument("--title", default="fedglobal report", help="the report's title")

    export = sub.add_parser("export", help="export a run's model (keras, savedmodel, tflite)")
    export.add_argument("run", help="a run folder")
    export.add_argument("--format", choices=["keras", "savedmodel", "tflite"], default="keras")
    export.add_argument("--region", default=None, help="a region's personalised model")
    export.add_argument("-o", "--output", default=None, help="where to write (default: RUN/export)")

    board = sub.add_parser("tensorboard", help="start TensorBoard on run folders")
    board.add_argument("logdir", nargs="?", default="runs", help="folder of runs (default: runs)")
    board.add_argument("--port", type=port, default=6006, help="0 lets the OS pick a free port")
    board.add_argument("--host", default="127.0.0.1")
    board.add_argument(
        "--print-command", action="store_true", help="print the tensorboard command, do not run"
    )


def run_command(args: argparse.Namespace) -> int:
    """Run one of :data:`COMMANDS`; returns the exit code."""
    if args.command == "report":
        return _report(args)
    if args.command == "export":
        return _export(args)
    return _tensorboard(args)


def _is_run(path: Path) -> bool:
    return (path / "summary.json").is_file() and (path / "history.csv").is_file()


def expand_runs(paths: list[str]) -> list[Path]:
    """Run folders from ``paths``: each is a run folder or a folder holding run folders."""
    runs: list[Path] = []
    for text in paths:
        path = Path(text)
        if not path.exists():
            raise RunError(f"no such run folder: {text!r}")
        if _is_run(path):
            runs.append(path)
            continue
        if not path.is_dir():
            raise RunError(f"{text!r} is a file, not a run folder")
        inner = sorted(p for p in path.iterdir() if p.is_dir() and _is_run(p))
        if not inner:
            raise RunError(
                f"{text!r} is not a run folder (no summary.json and history.csv) "
                "and holds no run folders"
            )
        runs.extend(inner)
    return runs


def _report(args: argparse.Namespace) -> int:
    from fedglobal.run.report import write_report

    runs = expand_runs(args.runs)
    out = write_report(runs, args.output, title=args.title)
    print(f"report: {out} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
    return 0


def _export(args: argparse.Namespace) -> int:
    from fedglobal.run.export import export_model

    path = export_model(args.run, args.format, region=args.region, out=args.output)
    print(f"exported {args.format}: {path}")
    return 0


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _tensorboard(args: argparse.Namespace) -> int:
    from fedglobal.server.callbacks.tensorboard import launch_command

    logdir = Path(args.logdir)
    if not logdir.is_dir():
        raise RunError(f"no such folder: {args.logdir!r} (run folders are written to runs/)")
    command = launch_command(logdir, host=args.host, port=args.port)
    if args.print_command:
        print(" ".join(command))
        return 0
    if not any(logdir.rglob("events.out.tfevents.*")):
        print(
            f"fedglobal: note: no TensorBoard event files under {logdir} yet "
            "(runs write them unless [output] tensorboard = false)",
            file=sys.stderr,
        )
    process = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # so `kill <pid>` ends the child too
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
