"""Every registered strategy with every model of the zoo, one round on tiny data.

Each combination either runs or ends the CLI in one clear line (exit 2), never
a traceback. The data is a 7-region table of 784 numeric columns, so the
``cnn`` (28x28 images) fits too and Bulyan (``4f + 3 = 7`` clients) can run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w

import strategies
from fedglobal.cli import main as cli
from fedglobal.models import available

pytestmark = pytest.mark.slow

REGIONS = 7
ROWS = 10

#: The combinations that cannot fit, and what their one line must say.
REFUSED = {("logistic", "fedbn"): "matches no model variable"}
#: Asynchronous strategies need [geo], whose clock orders the arrivals (tests/geo runs them).
ASYNCHRONOUS = {"fedbuff", "fedasync"}


@pytest.fixture(scope="module")
def tiny_table(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    x = rng.random((REGIONS * ROWS, 28 * 28)).round(2)
    frame = pd.DataFrame(x, columns=[f"p{i}" for i in range(28 * 28)])
    frame["region"] = np.repeat([f"r{i}" for i in range(REGIONS)], ROWS)
    frame["label"] = np.where(x[:, 0] > 0.5, "a", "b")
    path = tmp_path_factory.mktemp("matrix") / "tiny.csv"
    frame.to_csv(path, index=False)
    return path


def _experiment(folder: Path, table: Path, model: str, strategy: str) -> Path:
    raw = {
        "experiment": {"name": f"{model}-{strategy}", "seed": 1, "rounds": 1},
        "data": {
            "source": f"csv:{table}",
            "region": "region",
            "target": "label",
            "task": "classification",
        },
        # fedbn keeps the batch-normalisation variables local: models that can have them do
        "model": {"name": model, "hidden": [4], "filters": [2], "batch_norm": strategy == "fedbn"},
        "client": {"batch_size": 8},
        "strategy": {"name": strategy},
        "output": {"plots": False, "tensorboard": False},
    }
    if strategy == "hierfavg":  # two groups of regions, from a [geo] grouping table
        names = [f"r{i}" for i in range(REGIONS)]
        raw["strategy"]["group_by"] = "geo"
        raw["geo"] = {
            "server": [0.0, 0.0],
            "regions": {name: {"lat": float(i), "lon": float(i)} for i, name in enumerate(names)},
            "groups": {"low": names[:3], "high": names[3:]},
        }
    path = folder / "experiment.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


#: The zoo's models: not those test modules register for their own checks (tests/speed
#: registers ``speedtest_*`` models with fixed input shapes), which are in the registry
#: when the whole suite is collected.
ZOO = [name for name in available() if not name.startswith("speedtest_")]


def test_the_matrix_covers_every_registered_name():
    assert {"logistic", "mlp", "cnn"} <= set(ZOO)
    assert len(strategies.available()) >= 15


@pytest.mark.parametrize("model", ZOO)
@pytest.mark.parametrize("strategy", strategies.available())
def test_strategy_with_model_runs_or_ends_in_one_line(
    strategy, model, tiny_table, tmp_path, capsys
):
    experiment = _experiment(tmp_path, tiny_table, model, strategy)
    out_dir = tmp_path / "runs"
    code = cli.main(["simulate", str(experiment), "--quiet", "--output-dir", str(out_dir)])
    err = capsys.readouterr().err
    refused = REFUSED.get((model, strategy))
    if strategy in ASYNCHRONOUS:
        refused = "is asynchronous: it needs [geo]"
    if refused is None:
        assert code == 0, err[-3000:]
        (run_dir,) = list(out_dir.iterdir())
        history = pd.read_csv(run_dir / "history.csv")
        assert 1 in set(history["round"]), history.tail()
        return
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("fedglobal:")]
    assert len(lines) == 1 and lines[0].startswith("fedglobal: error: "), err
    assert refused in lines[0]
    assert "Traceback" not in err
    assert not out_dir.exists()  # refused before a run folder was made
