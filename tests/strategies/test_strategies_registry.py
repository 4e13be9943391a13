"""Registry: get by name, dict or instance; errors; get_config round trip; public API."""

import re

import pytest
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import Strategy

import strategies
from strategies import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedBN,
    FedMedian,
    FedPer,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Layerwise,
    MultiKrum,
    get,
    register,
)
from strategies.asynchronous import FedAsync, FedBuff
from strategies.errors import InvalidParameterError, StrategyError, UnknownStrategyError
from strategies.hierfavg import HierFAVG


def test_public_api_pinned():
    assert sorted(strategies.__all__) == sorted(
        [
            "CLIPPING_NORM_KEY",
            "LOCAL_LAYERS_KEY",
            "LOCAL_STEPS_KEY",
            "PROXIMAL_MU_KEY",
            "Bulyan",
            "DPFedAvg",
            "Ditto",
            "FedAdagrad",
            "FedAdam",
            "FedAvg",
            "FedAvgM",
            "FedBN",
            "FedMedian",
            "FedNova",
            "FedPer",
            "FedProx",
            "FedTrimmedAvg",
            "FedYogi",
            "Krum",
            "LayerRule",
            "Layerwise",
            "MultiKrum",
            "QFFL",
            "Scaffold",
            "aggregate",
            "available",
            "errors",
            "get",
            "register",
            "robust",
            "server_opt",
        ]
    )
    assert strategies.LOCAL_LAYERS_KEY == "local-layers"
    assert strategies.LOCAL_STEPS_KEY == "local-steps"
    assert strategies.PROXIMAL_MU_KEY == "proximal-mu"
    assert issubclass(FedAvg, FlowerFedAvg)


CATALOGUE = {
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "dpfedavg": strategies.DPFedAvg,
    "fedavgm": FedAvgM,
    "fedadagrad": FedAdagrad,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedmedian": FedMedian,
    "fedtrimmedavg": FedTrimmedAvg,
    "krum": Krum,
    "multikrum": MultiKrum,
    "bulyan": Bulyan,
    "layerwise": Layerwise,
    "fedper": FedPer,
    "fedbn": FedBN,
    "fedbuff": FedBuff,
    "fedasync": FedAsync,
    "hierfavg": HierFAVG,
    "qffl": strategies.QFFL,
    "fednova": strategies.FedNova,
    "scaffold": strategies.Scaffold,
    "ditto": strategies.Ditto,
}


def test_catalogue_names():
    assert strategies.available() == sorted(CATALOGUE)
    for name, cls in CATALOGUE.items():
        strategy = get(name)
        assert type(strategy) is cls and isinstance(strategy, FedAvg)
        assert re.search(r"et al\. 20\d\d", cls.__doc__ or ""), f"{name}: cite the paper"


def test_every_strategy_accepts_the_server_app_parameters():
    """fedglobal's build_strategy passes these to every strategy."""
    for name in CATALOGUE:
        strategy = get(
            name,
            seed=3,
            wait_timeout=5.0,
            train_metrics_aggr_fn=None,
            evaluate_metrics_aggr_fn=None,
            stragglers=0.0,
        )
        assert strategy.seed == 3 and strategy.wait_timeout == 5.0


def test_get_by_name_case_insensitive():
    strategy = get("FedAvg", fraction_train=0.5)
    assert type(strategy) is FedAvg and strategy.fraction_train == 0.5
    assert type(get("fedbn")) is FedBN and type(get("fedper")) is FedPer


def test_get_by_dict():
    spec = {"name": "layerwise", "layers": [{"match": "*bn*", "rule": "local"}], "seed": 4}
    strategy = get(spec)
    assert type(strategy) is Layerwise and strategy.seed == 4
    assert spec["name"] == "layerwise"  # not mutated
    assert get({"name": "fedavg", "seed": 1}, seed=2).seed == 2


def test_get_instance_as_is():
    strategy = FedAvg()
    assert get(strategy) is strategy
    with pytest.raises(InvalidParameterError):
        get(strategy, seed=3)


def test_unknown_name_lists_and_suggests():
    with pytest.raises(UnknownStrategyError) as info:
        get("fedavgg")
    message = str(info.value)
    assert "Did you mean 'fedavg'" in message
    for name in ("fedavg", "layerwise", "fedper", "fedbn"):
        assert name in message
    assert info.value.suggestion == "fedavg"
    assert isinstance(info.value, ValueError)


def test_bad_param_names_it_and_lists_accepted():
    with pytest.raises(InvalidParameterError, match=r"'fraction_trian'.*'fraction_train'.*seed"):
        get("fedavg", fraction_trian=0.5)
    with pytest.raises(InvalidParameterError, match=r"'layers'.*head"):
        get("fedper", layers=[])


def test_uninterpretable_identifier():
    with pytest.raises(StrategyError, match="Could not interpret"):
        get(42)
    with pytest.raises(StrategyError, match="'name'"):
        get({"seed": 1})


@pytest.mark.parametrize(
    "strategy",
    [
        FedAvg(fraction_train=0.3, min_train_clients=1, seed=9, wait_timeout=5),
        Layerwise(layers=[{"match": "d*", "rule": "uniform", "interval": 3}], seed=2),
        FedPer(head="out*", fraction_evaluate=0.0),
        FedBN(pattern="*bn*"),
        FedProx(proximal_mu=0.5, stragglers=0.2, straggler_max_steps=4),
        FedAvgM(server_learning_rate=0.7, server_momentum=0.5),
        FedAdam(eta=0.1, beta_1=0.8, tau=0.01, initial_accumulator=0.0),
        FedYogi(eta=0.02),
        FedAdagrad(tau=0.1),
        FedMedian(min_train_clients=3),
        FedTrimmedAvg(beta=0.1),
        Krum(num_malicious=2),
        MultiKrum(num_malicious=1, num_selected=2, min_train_clients=6),
        Bulyan(num_malicious=0),
        Layerwise(layers=[{"match": "d*", "weight": "inverse-loss"}]),
        strategies.QFFL(q=2.0, client_learning_rate=0.1),
        strategies.FedNova(momentum=0.9),
        strategies.Scaffold(server_learning_rate=0.5),
        strategies.Ditto(lam=2.0),
    ],
)
def test_get_config_round_trip(strategy):
    config = strategy.get_config()
    rebuilt = type(strategy)(**config)
    assert rebuilt.get_config() == config
    assert get({"name": type(strategy).__name__.lower(), **config}).get_config() == config


def test_register_custom_and_duplicates():
    class Custom(FedAvg):
        pass

    try:
        register("test-custom-fedavg")(Custom)
        assert type(get("TEST-custom-fedavg")) is Custom
        assert "test-custom-fedavg" in strategies.available()
    finally:
        strategies.registry._REGISTRY.pop("test-custom-fedavg", None)
    with pytest.raises(StrategyError, match="already registered"):
        register("fedavg")(Custom)
    with pytest.raises(StrategyError, match="not a flwr Strategy"):
        register("x")(dict)
    assert issubclass(Custom, Strategy)
