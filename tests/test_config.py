"""Config: TOML -> frozen dataclasses, validated once, with errors that name the key."""

from __future__ import annotations

import dataclasses

import pytest

from fedglobal.config import ExperimentConfig, load_config, parse_override
from fedglobal.errors import ConfigError


def test_quickstart_loads_into_frozen_dataclasses(quickstart_path):
    cfg = load_config(quickstart_path)
    assert cfg.experiment.name == "quickstart"
    assert cfg.data.region == "region"
    assert cfg.strategy.name == "fedavg"
    assert cfg.strategy.params == {"fraction_train": 1.0, "min_train_clients": 2}
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.experiment.rounds = 3  # type: ignore[misc]


def test_overrides_use_the_same_validation(quickstart_path):
    cfg = load_config(
        quickstart_path,
        ["experiment.rounds=5", "strategy.name=layerwise", "client.optimizer='sgd'"],
    )
    assert cfg.experiment.rounds == 5
    assert cfg.strategy.name == "layerwise"
    assert cfg.client.optimizer == "sgd"
    with pytest.raises(ConfigError, match="client.epochs = 0 is too small"):
        load_config(quickstart_path, ["client.epochs=0"])


def test_resolved_config_round_trips_through_toml(quickstart_path, tmp_path):
    cfg = load_config(quickstart_path, ["client.epochs=2"])
    path = tmp_path / "config.toml"
    path.write_text(cfg.to_toml())
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()


def test_unknown_key_suggests_the_nearest(quickstart_path):
    with pytest.raises(
        ConfigError, match=r"unknown key 'epohcs' in \[client\]; did you mean 'epochs'"
    ):
        load_config(quickstart_path, ["client.epohcs=3"])
    with pytest.raises(ConfigError, match="unknown key 'modle'.*did you mean 'model'"):
        ExperimentConfig.from_dict({"modle": {}})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("experiment.rounds='ten'", "experiment.rounds = 'ten' must be an integer"),
        ("client.learning_rate=true", "client.learning_rate = True must be a number"),
        ("data.test_fraction=1.5", "data.test_fraction = 1.5 must be < 1.0"),
        (
            "experiment.engine='kubernetes'",
            "experiment.engine = 'kubernetes' is not allowed; choose one of",
        ),
        ("model.hidden=[64, 'x']", r"model.hidden\[1\] = 'x' must be an integer"),
        ("client.shuffle=1", "client.shuffle = 1 must be true or false"),
    ],
)
def test_wrong_types_and_ranges_name_key_and_value(quickstart_path, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(quickstart_path, [override])


def test_unknown_strategy_lists_known_ones(quickstart_path):
    with pytest.raises(ConfigError, match="fedavgg.*layerwise.*Did you mean 'fedavg'"):
        load_config(quickstart_path, ["strategy.name=fedavgg"])


def test_unknown_strategy_parameter_is_named(quickstart_path):
    with pytest.raises(ConfigError, match="fraction_trian"):
        load_config(quickstart_path, ["strategy.fraction_trian=0.5"])


def test_unknown_model_lists_known_ones(quickstart_path):
    with pytest.raises(
        ConfigError, match="model.name = 'mpl'.*did you mean 'mlp'.*known: cnn, logistic, mlp"
    ):
        load_config(quickstart_path, ["model.name=mpl"])


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="experiment file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_incompatible_combinations():
    base = {"data": {"source": "csv:x.csv", "target": "y", "partition": "column"}}
    with pytest.raises(ConfigError, match="needs data.region"):
        ExperimentConfig.from_dict(base)
    with pytest.raises(ConfigError, match="needs task = 'classification'"):
        ExperimentConfig.from_dict(
            {"data": {"source": "csv:x.csv", "target": "y", "partition": "dirichlet"}}
        )


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="must look like section.key=value"):
        parse_override("client.epochs")
    with pytest.raises(ConfigError, match="must look like section.key"):
        parse_override("epochs=3")
    assert parse_override("data.source=csv:/tmp/a.csv") == ("data.source", "csv:/tmp/a.csv")


def test_relative_csv_path_resolves_against_the_experiment_file(tmp_path):
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "e.toml").write_text(
        '[data]\nsource = "csv:data/rows.csv"\nregion = "r"\ntarget = "y"\n'
    )
    cfg = load_config(exp / "e.toml")
    assert cfg.data.source == f"csv:{exp / 'data' / 'rows.csv'}"
