"""Engines: how messages reach clients. They differ only in their Flower Grid.

The engines never import ``clients``: they load the ServerApp and ClientApp by
component reference, the same strings as ``[tool.flwr.app.components]``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from fedglobal.errors import EngineError
from fedglobal.runtime import compile_cache
from fedglobal.runtime.bulk_import import bulk_import

SERVER_APP = "fedglobal.server.app:app"
CLIENT_APP = "clients.app:app"
#: The ClientApp's batched entry point (cohort training and evaluation), used in-process.
COHORT = "clients.cohort:run_cohort"

ENGINES = ("inprocess", "cluster", "ray", "deployment")


def load_component(reference: str) -> Any:
    """Load ``module:attribute`` (a Flower app component reference).

    A module's first import (the apps bring in TensorFlow and Keras) runs under
    :func:`fedglobal.runtime.bulk_import.bulk_import`, after the process's XLA programs
    are set to be cached across runs (:mod:`fedglobal.runtime.compile_cache`).
    """
    module_name, _, attribute = reference.partition(":")
    try:
        if module_name in sys.modules:
            return getattr(sys.modules[module_name], attribute)
        with bulk_import():
            compile_cache.enable()
            module = importlib.import_module(module_name)
        return getattr(module, attribute)
    except (ImportError, AttributeError) as exc:
        raise EngineError(f"cannot load app component {reference!r}: {exc}") from exc
