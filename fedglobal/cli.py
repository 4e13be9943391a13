"""The ``fedglobal`` command line.

fedglobal simulate experiments/quickstart.toml --set experiment.rounds=5
fedglobal simulate experiments/quickstart.toml --resume runs/quickstart-20250101-120000
fedglobal config experiments/quickstart.toml --set strategy.name=layerwise
fedglobal regions experiments/quickstart.toml
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fedglobal import cli_bench, cli_engines, cli_reports
from fedglobal.errors import FedGlobalError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedglobal", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def experiment_command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("experiment", help="experiment TOML file")
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="SECTION.KEY=VALUE",
            help="override one key of the experiment (repeatable)",
        )
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
        help="continue the run in RUN_DIR from its last checkpoint (resume.npz; inprocess)",
    )
    experiment_command("config", "print the resolved, validated experiment")
    experiment_command("regions", "list the regional clients of an experiment")
    cli_bench.add_parser(sub)
    cli_reports.add_commands(sub)  # report, export, tensorboard
    cli_engines.add_commands(sub)  # certs, keys, superlink, client, run, deploy
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fedglobal`` console script."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
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
    except FedGlobalError as exc:
        print(f"fedglobal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedglobal: interrupted", file=sys.stderr)
        return 130


def console() -> None:
    """The ``fedglobal`` console script: :func:`main`, then a quick exit.

    The exit skips the interpreter's teardown (about 1 s with TensorFlow loaded;
    see :mod:`fedglobal.fast_exit`) after running the exit handlers.
    """
    from fedglobal.fast_exit import exit_now

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
