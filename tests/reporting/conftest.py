"""Fixtures for the reporting tests: two tiny real runs (3 regions, 2 rounds, real TF).

``tiny_runs`` runs once per session:

- ``fedavg``: server-side evaluation on a held-out CSV, TensorBoard, plots;
- ``fedper``: the output layer stays local and every region's copy is
  collected at the end (``[output] personal_models``).

Collecting local layers needs a ClientApp handler for ``query.local_layers``.
Until ``clients/app.py`` has one, ``local_layers_handler`` registers this
reference implementation on the real ClientApp for the session (and removes
it afterwards): it replies with the region's own trained copy of the named
layers, the same state the ClientApp already keeps for local layers.
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


@pytest.fixture(scope="session")
def local_layers_handler():
    """Register the reference ``query.local_layers`` handler on clients.app:app."""
    from flwr.app import ConfigRecord, Message, RecordDict

    import clients.app as client_app
    from fedglobal.weights import from_record, to_record

    key = "query.local_layers"
    registered = client_app.app._registered_funcs
    if key in registered:  # the ClientApp has its own: use it
        yield
        return

    def local_layers(message: Message, context) -> Message:
        config = message.content["config"]
        cfg = client_app.experiment_from(config)
        region, _ = client_app._region(context, cfg)
        saved = context.state.get(client_app.LOCAL_STATE_KEY)
        if saved is None:
            raise RuntimeError(f"region {region} never trained: it has no local layers")
        own = from_record(saved)
        names = list(config["local-layers"])
        content = RecordDict(
            {
                "arrays": to_record({n: own[n] for n in names}),
                "meta": ConfigRecord({"region": region}),
            }
        )
        return Message(content, reply_to=message)

    client_app.app.query("local_layers")(local_layers)
    try:
        yield
    finally:
        registered.pop(key, None)


@dataclass
class TinyRuns:
    folder: Path
    fedavg: object  # fedglobal.Result
    fedper: object


@pytest.fixture(scope="session")
def tiny_runs(data_folder: Path, local_layers_handler) -> TinyRuns:
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
