"""Options several commands share: one definition each."""

from __future__ import annotations

import argparse

__all__ = ["add_overrides"]


def add_overrides(
    parser: argparse.ArgumentParser,
    help_text: str = "override one key of the experiment (repeatable)",
) -> None:
    """``--set SECTION.KEY=VALUE`` (repeatable), collected in ``args.overrides``.

    The values are parsed as TOML by :meth:`fedglobal.config.ExperimentConfig.replace`.
    """
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=help_text,
    )
