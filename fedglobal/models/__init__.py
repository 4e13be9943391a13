"""Model zoo: a registry of factories returning *uncompiled* Keras models.

Every model starts with a ``normalize`` layer built from the federated schema
(feature means and variances computed from client sums, never rows), and a
regression model ends with ``denormalize`` so it predicts in the target's own
units. Layers have fixed names so that weights travel under stable names
(``hidden_0/kernel``), which layerwise rules match against.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fedglobal.errors import ModelError

if TYPE_CHECKING:
    import keras

    from fedglobal.config import ModelConfig
    from fedglobal.data import Schema

ModelFactory = Callable[["ModelConfig", "Schema"], "keras.Model"]
_REGISTRY: dict[str, ModelFactory] = {}


def register(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a model factory under ``name`` (usable as ``model.name`` in TOML)."""

    def deco(factory: ModelFactory) -> ModelFactory:
        _REGISTRY[name.lower()] = factory
        return factory

    return deco


def available() -> list[str]:
    """Names of the registered models."""
    _load_builtin()
    return sorted(_REGISTRY)


def build_model(config: ModelConfig, schema: Schema) -> keras.Model:
    """Build the named model for the schema's inputs and task (uncompiled)."""
    _load_builtin()
    factory = _REGISTRY.get(config.name.lower())
    if factory is None:
        close = difflib.get_close_matches(config.name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ModelError(
            f"unknown model {config.name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})"
        )
    return factory(config, schema)


def variable_names(model: Any) -> list[str]:
    """The model's variable paths in order: the names weights travel under."""
    return [v.path for v in model.weights]


def _load_builtin() -> None:
    from fedglobal.models import zoo  # noqa: F401  (registers the built-in models)
