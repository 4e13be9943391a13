"""Typed errors raised by fedglobal for user mistakes.

Every error names what was wrong, where, and what is allowed, so that a user
never has to read a traceback from deep inside TensorFlow or Flower.
"""

from __future__ import annotations

import sys


class FedGlobalError(Exception):
    """Base class of every error fedglobal raises on purpose."""


class ConfigError(FedGlobalError, ValueError):
    """An experiment file or override is invalid (names the key and the value)."""


class DataError(FedGlobalError, ValueError):
    """A data source, column or region is missing or unusable."""


class ModelError(FedGlobalError, ValueError):
    """A model cannot be built from the given configuration."""


class EngineError(FedGlobalError, RuntimeError):
    """An engine could not run the federation (timeouts, dead processes, ...)."""


class RunError(FedGlobalError, RuntimeError):
    """A run failed: too few clients replied, or its results cannot be read."""


class CheckpointError(RunError):
    """A checkpoint is missing, torn, corrupt, or does not fit the experiment resumed."""


def is_user_error(exc: BaseException) -> bool:
    """Whether the CLI reports ``exc`` in one line, without a traceback.

    True for fedglobal's own errors and those of the ``strategies`` package (a
    bad strategy parameter or layer rule; ``clients`` raises fedglobal's
    errors). ``strategies`` is looked up only if loaded: an error of a package
    never imported cannot have been raised, and the CLI stays fast to start.
    """
    if isinstance(exc, FedGlobalError):
        return True
    errors = sys.modules.get("strategies.errors")
    return errors is not None and isinstance(exc, errors.StrategyError)


def one_line(exc: BaseException) -> str:
    """The error's message on one line (its lines joined by ' | ')."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines) if lines else type(exc).__name__


def path_error(exc: OSError) -> str:
    """One line for an OSError about a path: what failed, on which path."""
    reason = exc.strerror or type(exc).__name__
    where = f"{exc.filename!s}" + (f" -> {exc.filename2!s}" if exc.filename2 else "")
    return f"{reason}: {where} (check the path and that its folder exists and is writable)"
