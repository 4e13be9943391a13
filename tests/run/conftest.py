"""Fixtures for the reporting tests: two tiny real runs (3 regions, 2 rounds, real TF).

``tiny_runs`` runs once per session:

- ``fedavg``: server-side evaluation on a held-out CSV, TensorBoard, plots;
- ``fedper``: the output layer stays local and every region's copy is
  collected at the end (``[output] personal_models``), by the ClientApp's
  ``query.local_layers`` handler (``clients.app.local_layers``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REGIONS = ("east", "north", "south")


def make_table(n: int = 360, seed: int = 0) -> pd.DataFrame:
    """A small regression table: y = 3 x1 - 2 x2 + noise, with a region effect."""
    rng = np.random.default_rng(seed)
    region = rng.choice(REGIONS, n)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    shift = pd.Series(region).map({"east": 0.0, "north": 1.0, "south": -1.0}).to_numpy()
    y = 3 * x1 - 2 * x2 + shift + rng.normal(scale=0.3, size=n)
    return pd.DataFrame({"region": region, "x1": x1, "x2": x2, "y": y})


def tiny_experiment(folder: Path, name: str, **sections: dict) -> dict:
    """A 2-round experiment over ``folder/data.csv`` with runs written to ``folder/runs``."""
    cfg: dict = {
        "experiment": {"name": name, "rounds": 2, "output_dir": str(folder / "runs")},
        "data": {"source": f"csv:{folder / 'data.csv'}", "region": "region", "target": "y"},
        "model": {"hidden": [8]},
        "client": {"learning_rate": 0.01, "batch_size": 32},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


@pytest.fixture(scope="session")
def data_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("reporting")
    make_table().to_csv(folder / "data.csv", index=False)
    make_table(n=90, seed=1).to_csv(folder / "holdout.csv", index=False)
    return folder


@dataclass
class TinyRuns:
    folder: Path
    fedavg: object  # fedglobal.Result
    fedper: object


@pytest.fixture(scope="session")
def tiny_runs(data_folder: Path) -> TinyRuns:
    import fedglobal

    fedavg = fedglobal.simulate(
        tiny_experiment(
            data_folder, "fedavg", server={"eval_source": f"csv:{data_folder / 'holdout.csv'}"}
        ),
        quiet=True,
    )
    fedper = fedglobal.simulate(
        tiny_experiment(
            data_folder,
            "fedper",
            strategy={"name": "fedper", "head": "output/*"},
            output={"personal_models": True, "tensorboard": False},
        ),
        quiet=True,
    )
    return TinyRuns(folder=data_folder, fedavg=fedavg, fedper=fedper)


@pytest.fixture
def run_copy(tiny_runs: TinyRuns, tmp_path: Path):
    """A private copy of the fedavg run folder (for tests that write into it)."""

    def copy(which: str = "fedavg") -> Path:
        source = getattr(tiny_runs, which).run_dir
        target = tmp_path / source.name
        shutil.copytree(source, target)
        return target

    return copy


@pytest.fixture(scope="session")
def make_experiment(data_folder: Path):
    """``make_experiment(name, **sections)``: a tiny experiment over the session's data."""
    return lambda name, **sections: tiny_experiment(data_folder, name, **sections)
