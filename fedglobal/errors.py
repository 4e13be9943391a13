"""Typed errors raised by fedglobal for user mistakes.

Every error names what was wrong, where, and what is allowed, so that a user
never has to read a traceback from deep inside TensorFlow or Flower.
"""

from __future__ import annotations


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
