"""Robust rules on a federation set up for FedAvg: min_train_clients raised, or refused."""

from __future__ import annotations

import pytest

from fedglobal.config import load_config
from fedglobal.errors import ConfigError
from fedglobal.runtime.preflight import check_enough_regions


@pytest.mark.parametrize(("name", "needed"), [("krum", 5), ("multikrum", 5), ("bulyan", 7)])
def test_quickstart_min_train_clients_is_raised_to_the_rules_minimum(quickstart_path, name, needed):
    cfg = load_config(quickstart_path, [f"strategy.name={name}"])
    assert cfg.strategy.params["min_train_clients"] == needed
    assert f"min_train_clients = {needed}" in cfg.to_toml()
    check_enough_regions(cfg, [f"r{i}" for i in range(22)])  # the quickstart has 22


def test_a_larger_value_is_kept_and_fedavg_is_untouched(quickstart_path):
    cfg = load_config(quickstart_path, ["strategy.name=krum", "strategy.min_train_clients=9"])
    assert cfg.strategy.params["min_train_clients"] == 9
    assert load_config(quickstart_path).strategy.params["min_train_clients"] == 2


def test_too_few_regions_names_num_malicious(quickstart_path):
    cfg = load_config(quickstart_path, ["strategy.name=bulyan", "strategy.num_malicious=2"])
    assert cfg.strategy.params["min_train_clients"] == 11  # 4f + 3
    with pytest.raises(ConfigError) as info:
        check_enough_regions(cfg, ["a", "b", "c"])
    message = str(info.value)
    assert "num_malicious = 2 needs at least 11 training clients" in message
    assert "only 3 region(s)" in message and "lower strategy.num_malicious" in message


def test_a_bad_num_malicious_is_still_one_config_error(quickstart_path):
    with pytest.raises(ConfigError, match="num_malicious must be an int >= 0"):
        load_config(quickstart_path, ["strategy.name=krum", "strategy.num_malicious=-1"])
