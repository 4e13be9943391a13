"""strategies.interface: what the ServerApp asks of catalogue and Flower strategies."""

from __future__ import annotations

from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

import strategies
from strategies.interface import Layered, Logged, Stateful, view


def test_a_catalogue_strategy_declares_its_needs_logs_and_state():
    strategy = strategies.get("krum", num_malicious=1, min_train_clients=5)
    facing = view(strategy)
    assert facing.needs.min_train_nodes == 5 and facing.needs.num_malicious == 1
    assert isinstance(strategy, Logged) and isinstance(strategy, Stateful)
    assert not facing.layered and facing.local_layers(4) == []
    strategy.rejected.append({"round": 1, "region": "asia", "reason": "norm"})
    outcomes = facing.outcomes()
    assert outcomes["rejected_updates"] == [{"round": 1, "region": "asia", "reason": "norm"}]
    assert outcomes["failed_replies"] == [] and outcomes["dropped_stragglers"] == []


def test_a_layered_strategy_plans_the_layers_regions_keep():
    strategy = strategies.get("fedper", head="output/*")
    facing = view(strategy)
    assert facing.layered and isinstance(strategy, Layered)
    facing.bind(["hidden/kernel", "hidden/bias", "output/kernel", "output/bias"])
    assert facing.local_layers(1) == ["output/kernel", "output/bias"]


def test_a_plain_flower_strategy_gets_flowers_defaults():
    facing = view(FlowerFedAvg(fraction_train=0.5, min_train_nodes=4))
    assert facing.needs.fraction_train == 0.5 and facing.needs.min_train_nodes == 4
    assert facing.needs.num_malicious is None and not facing.needs.drop_stragglers
    assert not facing.layered and not facing.stateful
    assert facing.outcomes() == {
        "rejected_updates": [],
        "failed_replies": [],
        "dropped_stragglers": [],
    }
