"""Checks of an experiment that need no training: run before any client starts.

A mistake that the configuration alone reveals should end the command before
data is loaded and clients are started. :func:`check_strategy_fits_model`
builds the model from the configuration and a stand-in schema (the variable
names of the built-in models depend on the configuration and the task only, not
on the data's statistics) and binds the strategy's layer rules to them.
:func:`check_enough_regions` compares the strategy's minimums with the data's
regions once those are listed.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedglobal.config import ExperimentConfig
from fedglobal.errors import ConfigError, FedGlobalError

__all__ = ["check_enough_regions", "check_strategy_fits_model", "model_variable_names"]

#: The stand-in schema's input width: a 28x28 image fits every built-in model.
_STAND_IN_WIDTH = 28 * 28


def model_variable_names(cfg: ExperimentConfig) -> list[str] | None:
    """The variable paths of ``cfg``'s model, built on a stand-in schema.

    Returns None when the model cannot be built without the data (a user's
    registered model that needs the real schema); the server checks the layer
    rules against the real model then.
    """
    from fedglobal.data import Schema
    from fedglobal.models import build_model, variable_names

    classification = cfg.data.task == "classification"
    schema = Schema(
        feature_names=[f"x{i}" for i in range(_STAND_IN_WIDTH)],
        mean=[0.0] * _STAND_IN_WIDTH,
        variance=[1.0] * _STAND_IN_WIDTH,
        task=cfg.data.task,
        classes=["0", "1"] if classification else None,
        target_mean=None if classification else 0.0,
        target_variance=None if classification else 1.0,
        target="target",
        raw_features=[f"x{i}" for i in range(_STAND_IN_WIDTH)],
        numeric=[f"x{i}" for i in range(_STAND_IN_WIDTH)],
    )
    try:
        model = build_model(cfg.model, schema)
    except FedGlobalError as exc:
        if "unknown model" in str(exc):
            raise ConfigError(f"model.name: {exc}") from None
        return None
    except Exception:  # a user's model that needs the real data: the server checks it
        return None
    return variable_names(model)


def check_strategy_fits_model(cfg: ExperimentConfig) -> None:
    """Raise ConfigError if the strategy's layer rules match no variable of the model.

    Layerwise strategies (``layerwise``, ``fedper``, ``fedbn``) name variables by
    pattern; a pattern that matches none is found here, before data is loaded.
    """
    import strategies
    from strategies.errors import StrategyError
    from strategies.interface import view

    try:
        strategy = strategies.get(cfg.strategy.name, **cfg.strategy.params)
    except StrategyError as exc:
        raise ConfigError(f"[strategy]: {exc}") from None
    if not view(strategy).layered:
        return
    names = model_variable_names(cfg)
    if names is None:
        return
    try:
        strategy.bind(names)
    except StrategyError as exc:
        raise ConfigError(
            f"strategy {cfg.strategy.name!r} does not fit model {cfg.model.name!r}: {exc}"
            f"{_hint(cfg, str(exc))}"
        ) from None


def _hint(cfg: ExperimentConfig, message: str) -> str:
    if "batch_normalization" in message and not cfg.model.batch_norm:
        return (
            "; the model has no batch normalisation: set model.batch_norm = true "
            "(--set model.batch_norm=true)"
        )
    if cfg.strategy.name == "layerwise":
        return "; fix the match patterns of [[strategy.layers]]"
    return ""


def check_enough_regions(cfg: ExperimentConfig, regions: Sequence[str]) -> None:
    """Fail fast when the strategy needs more clients than the data has regions.

    The minimums are read from the built strategy, so rule-specific defaults
    (e.g. Krum's 2f+3) count too, not only keys set in the experiment file.
    """
    import strategies
    from strategies.interface import view

    needs = view(strategies.get(cfg.strategy.name, **cfg.strategy.params)).needs
    for key, attribute in (
        ("min_available_clients", "min_available_nodes"),
        ("min_train_clients", "min_train_nodes"),
        ("min_evaluate_clients", "min_evaluate_nodes"),
    ):
        needed = int(getattr(needs, attribute))
        if needed > len(regions):
            f = needs.num_malicious
            if key == "min_train_clients" and f is not None:
                raise ConfigError(
                    f"strategy {cfg.strategy.name!r} with num_malicious = {f} needs at least "
                    f"{needed} training clients but the data has only {len(regions)} "
                    f"region(s): {', '.join(regions[:10])}; lower strategy.num_malicious "
                    "or use more regions"
                )
            raise ConfigError(
                f"strategy {cfg.strategy.name!r} needs {key} = {needed} but the data has "
                f"only {len(regions)} region(s): {', '.join(regions[:10])}; lower "
                f"strategy.{key} or use more regions"
            )
