"""Shared fixtures of the benchmark tests: a tiny real suite (FedProx synthetic data)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import tomli_w

# Four devices of FedProx Synthetic(1,1), two local steps, two rounds: seconds per run.
TINY: dict[str, Any] = {
    "suite": {"name": "tiny", "seeds": [0, 1], "metric": "accuracy", "target": 0.2},
    "base": {
        "experiment": {"rounds": 2},
        "data": {
            "source": "synthetic:fedprox",
            "task": "classification",
            "num_regions": 4,
            "synthetic_alpha": 1.0,
            "synthetic_beta": 1.0,
        },
        "model": {"name": "logistic"},
        "client": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 16, "steps": 2},
        "strategy": {"min_train_clients": 2, "min_available_clients": 4},
    },
    "datasets": [{"label": "Synthetic(1,1)"}],
    "strategies": [
        {"label": "FedAvg", "name": "fedavg"},
        {"label": "FedProx μ=1", "name": "fedprox", "proximal_mu": 1.0},
    ],
}


@pytest.fixture(scope="session")
def tiny_template() -> dict[str, Any]:
    """The tiny suite (a fresh deep copy: module-scoped fixtures may use it)."""
    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_suite() -> dict[str, Any]:
    """The tiny suite as a mapping (edit it, then write it with ``write_suite``)."""
    return copy.deepcopy(TINY)


@pytest.fixture
def write_suite(tmp_path: Path):
    def write(raw: dict[str, Any], name: str = "tiny.toml") -> Path:
        path = tmp_path / name
        path.write_text(tomli_w.dumps(raw), encoding="utf-8")
        return path

    return write
