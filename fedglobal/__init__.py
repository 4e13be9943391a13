"""fedglobal: federated learning simulation over geographically partitioned data.

>>> import fedglobal
>>> result = fedglobal.simulate("experiments/quickstart.toml")  # doctest: +SKIP
>>> result.history.head()  # doctest: +SKIP
"""

from __future__ import annotations

from fedglobal.config import ExperimentConfig, load_config
from fedglobal.errors import (
    ConfigError,
    DataError,
    EngineError,
    FedGlobalError,
    ModelError,
    RunError,
)
from fedglobal.runtime.quiet import install as _quiet_tensorflow_start

_quiet_tensorflow_start()  # TensorFlow C++ start-up notices off the console (runtime.quiet)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "EngineError",
    "ExperimentConfig",
    "FedGlobalError",
    "ModelError",
    "Result",
    "RunError",
    "load_config",
    "load_run",
    "simulate",
]


def __getattr__(name: str):  # lazy: keep `import fedglobal` free of TensorFlow
    if name == "simulate":
        from fedglobal.simulation import simulate

        return simulate
    if name in ("Result", "load_run"):
        from fedglobal.run import results

        return getattr(results, name)
    raise AttributeError(f"module 'fedglobal' has no attribute {name!r}")
