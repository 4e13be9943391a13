"""The ``fedglobal`` command line.

fedglobal simulate experiments/quickstart.toml --set experiment.rounds=5
fedglobal simulate --resume runs/quickstart-20250101-120000 [--set experiment.rounds=40]
fedglobal config experiments/quickstart.toml --set strategy.name=layerwise
fedglobal regions experiments/quickstart.toml
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fedglobal.cli import bench as cli_bench
from fedglobal.cli import engines as cli_engines
from fedglobal.cli import reports as cli_reports
from fedglobal.cli.options import add_overrides
from fedglobal.errors import is_user_error, one_line, path_error
from fedglobal.runtime import quiet


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedglobal", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def experiment_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if name == "simulate":  # --resume RUN_DIR alone: the run folder holds the experiment
            p.add_argument("experiment", nargs="?", help="experiment TOML file")
        else:
            p.add_argument("experiment", help="experiment TOML file")
        add_overrides(p)
        return p

    sim = experiment_command("simulate", "run a simulated federation")
    sim.add_argument(
        "--engine", choices=["inprocess", "cluster", "ray", "deployment"], default=None
    )
    sim.add_argument("--output-dir", default=None, help="where the run folder goes")
    sim.add_argument("--quiet", action="store_true", help="no progress lines")
    sim.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (resume.npz; inprocess); "
        "the experiment comes from RUN_DIR, --set experiment.rounds=N extends the run",
    )
    sim.set_defaults(subparser=sim)
    experiment_command("config", "print the resolved, validated experiment")
    experiment_command("regions", "list the regional clients of an experiment")
    cli_bench.add_parser(sub)
    cli_reports.add_commands(sub)  # report, export, tensorboard
    cli_engines.add_commands(sub)  # certs, keys, superlink, client, run, deploy
    for command in sub.choices.values():
        command.add_argument(
            "--verbose",
            action="store_true",
            help="show everything TensorFlow, Flower and Ray log (also in worker processes)",
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedglobal`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "simulate" and args.experiment is None and args.resume is None:
        args.subparser.error("the following arguments are required: experiment (or --resume)")
    if getattr(args, "verbose", False):
        os.environ[quiet.VERBOSE_ENV] = "1"  # this process and the ones it starts
        quiet.uninstall()
    quiet.quiet_environment()
    try:
        if args.command in cli_reports.COMMANDS:
            return cli_reports.run_command(args)
        if args.command in cli_engines.COMMANDS:
            return cli_engines.run_command(args)
        from fedglobal.config import load_config

        if args.command == cli_bench.COMMAND:
            return cli_bench.run(args)
        if args.command == "config":
            sys.stdout.write(load_config(args.experiment, args.overrides).to_toml())
            return 0
        if args.command == "regions":
            from fedglobal import data

            for region in data.list_regions(load_config(args.experiment, args.overrides)):
                print(region)
            return 0
        from fedglobal.simulation import simulate

        result = simulate(
            args.experiment,
            overrides=args.overrides,
            engine=args.engine,
            output_dir=args.output_dir,
            quiet=args.quiet,
            resume=args.resume,
        )
        _print_summary(result)
        return 0
    except KeyboardInterrupt:
        print("fedglobal: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.filename is None:
            raise  # not about a path the user gave: its traceback is what a report needs
        print(f"fedglobal: error: {path_error(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not is_user_error(exc):
            raise  # a bug: its traceback is what a report needs
        print(f"fedglobal: error: {one_line(exc)}", file=sys.stderr)
        return 2


def console() -> None:
    """The ``fedglobal`` console script: :func:`main`, then a quick exit.

    The exit skips the interpreter's teardown (about 1 s with TensorFlow loaded;
    see :mod:`fedglobal.runtime.fast_exit`) after running the exit handlers.
    """
    from fedglobal.runtime.fast_exit import exit_now

    try:
        code = main()
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    exit_now(code)


def _print_summary(result) -> None:
    final = result.summary.get("final", {}).get("test/all", {})
    shown = ", ".join(f"{k} {v:.4g}" for k, v in final.items())
    print(f"run folder: {result.run_dir}")
    print(f"final test metrics (all regions pooled): {shown}")


if __name__ == "__main__":
    console()
