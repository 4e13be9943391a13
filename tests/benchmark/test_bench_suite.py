"""Suite files: parsing, the grid of cells, and clear errors for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedglobal.benchmark import SuiteError, load_suite, parse_suite, select_cells

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "experiments" / "benchmarks").glob("*.toml"))


def _error(raw: dict, match: str, **kwargs) -> None:
    with pytest.raises(SuiteError, match=match):
        parse_suite(raw, path="/x/suite.toml", **kwargs)


def test_grid_order_and_labels(tiny_suite):
    tiny_suite["conditions"] = [
        {"label": "calm"},
        {"label": "storm", "strategy": {"stragglers": 0.5}},
    ]
    suite = parse_suite(tiny_suite, path="/x/tiny.toml")
    cells = suite.cells()
    assert len(cells) == 1 * 2 * 2 * 2
    # dataset, then seed, then condition, then strategy: consecutive cells share data
    assert [c.seed for c in cells] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert cells[0].key == "Synthetic(1,1) | calm | FedAvg | 0"
    storm = [suite.experiment(c) for c in cells if c.condition.label == "storm"]
    assert all(raw["strategy"]["stragglers"] == 0.5 for raw in storm)
    assert "stragglers" not in suite.experiment(cells[0])["strategy"]


def test_condition_strategy_params_go_only_where_accepted(tiny_suite):
    tiny_suite["strategies"].append({"label": "Krum", "name": "krum"})
    tiny_suite["conditions"] = [{"label": "attack", "strategy": {"num_malicious": 1}}]
    suite = parse_suite(tiny_suite, path="/x/tiny.toml")
    by_label = {c.strategy.label: suite.experiment(c)["strategy"] for c in suite.cells()}
    assert by_label["Krum"]["num_malicious"] == 1
    assert "num_malicious" not in by_label["FedAvg"]


def test_exclude_and_full_scale(tiny_suite):
    tiny_suite["exclude"] = [{"strategy": "fedprox*"}]
    tiny_suite["full"] = {"seeds": [0, 1, 2], "experiment": {"rounds": 50}, "exclude": []}
    small = parse_suite(tiny_suite, path="/x/tiny.toml")
    assert {c.strategy.label for c in small.cells()} == {"FedAvg"}
    assert small.experiment(small.cells()[0])["experiment"]["rounds"] == 2
    full = parse_suite(tiny_suite, path="/x/tiny.toml", full=True)
    assert len(full.cells()) == 2 * 3 and full.full
    assert full.experiment(full.cells()[0])["experiment"]["rounds"] == 50


def test_dataset_overrides_and_baselines(tiny_suite):
    tiny_suite["datasets"] = [
        {"label": "a", "data": {"synthetic_alpha": 0.0}, "metric": "f1", "target": 0.3},
        {"label": "b", "client": {"batch_size": 4}},
    ]
    tiny_suite["strategies"].append({"label": "alone", "baseline": "local-only"})
    suite = parse_suite(tiny_suite, path="/x/tiny.toml")
    a, b = suite.datasets
    assert suite.metric_for(a, "classification") == "f1" and suite.target_for(a) == 0.3
    assert suite.target_for(b) == 0.2
    cell = next(c for c in suite.cells() if c.dataset is a and c.strategy.label == "alone")
    raw = suite.experiment(cell)
    assert raw["data"]["synthetic_alpha"] == 0.0 and raw["data"]["num_regions"] == 4
    assert raw["strategy"]["name"] == "fedavg" and cell.strategy.kind == "local-only"


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda r: r.update(sutie={}), r"unknown key 'sutie'.*did you mean 'suite'"),
        (lambda r: r["suite"].update(seeds=[]), r"seeds must be a non-empty list"),
        (lambda r: r["suite"].update(seeds=[1, 1]), r"repeat"),
        (lambda r: r["suite"].update(seeds=[-1]), r"seed -1"),
        (lambda r: r["suite"].update(metric="acuracy"), r"did you mean 'accuracy'"),
        (lambda r: r.pop("strategies"), r"needs at least one \[\[strategies\]\]"),
        (lambda r: r.update(datasets=[]), r"needs at least one \[\[datasets\]\]"),
        (lambda r: r["datasets"].append({"label": "Synthetic(1,1)"}), r"labels must be unique"),
        (lambda r: r["datasets"].append({"data": {}}), r"#2 needs a non-empty string 'label'"),
        (lambda r: r["datasets"][0].update(dta={}), r"unknown key 'dta'.*did you mean 'data'"),
        (lambda r: r["datasets"][0].update(data=3), r"dataset 'Synthetic\(1,1\)'.data must be"),
        (lambda r: r["strategies"].append({"label": "x"}), r"strategy 'x': needs 'name'"),
        (
            lambda r: r["strategies"].append({"label": "x", "baseline": "locale"}),
            r"baseline 'locale'.*did you mean 'local'",
        ),
        (
            lambda r: r["strategies"].append({"label": "x", "baseline": "local", "mu": 1}),
            r"a baseline takes no strategy name or parameters",
        ),
        (lambda r: r["base"].update(clinet={}), r"\[base\]: unknown key 'clinet'"),
        (
            lambda r: r.update(conditions=[{"label": "c", "strategy": {"stragglerz": 0.5}}]),
            r"'stragglerz' is accepted by none.*did you mean 'stragglers'",
        ),
        (
            lambda r: r.update(conditions=[{"label": "c", "attack": {"kind": "flip"}}]),
            r"attack: kind 'flip' is not one of",
        ),
        (
            lambda r: r.update(conditions=[{"label": "c", "attack": {"kind": "noise"}}]),
            r"fraction must be a number",
        ),
        (
            lambda r: r.update(
                conditions=[{"label": "c", "attack": {"kind": "noise", "fraction": 1.5}}]
            ),
            r"fraction must be in \(0, 1\)",
        ),
        (lambda r: r.update(exclude=[{"strategy": "*"}]), r"removes every cell"),
        (lambda r: r.update(exclude=[{"strat": "*"}]), r"unknown key 'strat'"),
    ],
)
def test_suite_errors_are_clear(tiny_suite, edit, match):
    edit(tiny_suite)
    _error(tiny_suite, match)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(SuiteError, match="not found"):
        load_suite(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[suite\nname=1")
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(bad)
    near = ROOT / "experiments" / "benchmarks" / "geo_tabulr.toml"
    with pytest.raises(SuiteError, match="did you mean 'geo_tabular'"):
        load_suite(near)


def test_only_filter(tiny_suite):
    suite = parse_suite(tiny_suite, path="/x/tiny.toml")
    cells = suite.cells()
    assert {c.strategy.label for c in select_cells(cells, ["FedAvg"])} == {"FedAvg"}
    assert len(select_cells(cells, ["dataset=synthetic*", "strategy=fed*"])) == 4
    with pytest.raises(SuiteError, match="matches no cell"):
        select_cells(cells, ["strategy=krum"])
    with pytest.raises(SuiteError, match="key must be dataset, condition or strategy"):
        select_cells(cells, ["algo=fedavg"])


# Cells that fail by design, and say why (robustness.toml: Bulyan needs n >= 4f + 3).
EXPECTED_INVALID = {"robustness": ("Bulyan", "30%", "needs n >= 4f + 3")}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_suites_are_valid(path):
    """Every shipped suite parses at both scales and every cell is a valid experiment."""
    from fedglobal.benchmark.runner import _experiment
    from fedglobal.config import ExperimentConfig
    from fedglobal.errors import ConfigError

    for full in (False, True):
        suite = load_suite(path, full=full)
        assert suite.cells()
        for cell in suite.cells():
            try:
                ExperimentConfig.from_dict(_experiment(suite, cell), base_dir=suite.base_dir)
            except ConfigError as exc:
                strategy, condition, reason = EXPECTED_INVALID.get(suite.name, ("", "", "-"))
                assert cell.strategy.label == strategy and condition in cell.condition.label
                assert reason in str(exc)


def test_four_suites_are_shipped():
    assert {p.stem for p in SHIPPED} >= {
        "fedprox_synthetic",
        "geo_tabular",
        "fashion_mnist_dirichlet",
        "robustness",
    }
