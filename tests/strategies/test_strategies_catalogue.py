"""The strategy catalogue driven with real flwr Messages: FedProx, stragglers, server
optimizers, robust rules, layerwise weighting criteria, and state dicts."""

from itertools import count

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as flower

import strategies
from strategies import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    Layerwise,
    MultiKrum,
)
from strategies.errors import (
    InvalidParameterError,
    LayerRuleError,
    PreconditionError,
    StateDictError,
    StrategyError,
)
from strategies.sampling import select_stragglers
from tests.strategies.helpers import NodesOnlyGrid, f32, numpy, to_record

_ids = count(1)


pytestmark = pytest.mark.usefixtures("task_identity")


def configure(strategy, server_round, arrays, nodes, config=None):
    grid = NodesOnlyGrid(nodes)
    msgs = list(
        strategy.configure_train(server_round, to_record(arrays), config or ConfigRecord(), grid)
    )
    for msg in msgs:  # a message id, as a Grid gives on push
        msg.metadata.__dict__["_message_id"] = f"m{next(_ids)}"
    return sorted(msgs, key=lambda m: m.metadata.dst_node_id)


def reply(instruction, region, arrays, num_examples=1, **metrics):
    content = RecordDict(
        {
            "arrays": to_record(arrays),
            "metrics": MetricRecord({"num-examples": num_examples, **metrics}),
            "meta": ConfigRecord({"region": region}),
        }
    )
    return Message(content, reply_to=instruction)


def run_round(strategy, server_round, current, updates, weights=None, metrics=None):
    """One train round: node i+1 answers ``updates[i]``; returns the new arrays (numpy)."""
    nodes = list(range(1, len(updates) + 1))
    msgs = configure(strategy, server_round, current, nodes)
    weights = weights or [1] * len(updates)
    metrics = metrics or [{}] * len(updates)
    replies = [
        reply(m, f"r{i}", u, w, **extra)
        for i, (m, u, w, extra) in enumerate(zip(msgs, updates, weights, metrics, strict=True))
    ]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    return None if arrays is None else numpy(arrays)


# ---- FedProx (Li et al. 2020) ---------------------------------------------------------------


def test_fedprox_sends_mu_in_train_config_only():
    strategy = FedProx(proximal_mu=0.1)
    config = ConfigRecord({"lr": 0.5})
    msgs = configure(strategy, 1, {"w": f32(0)}, [1, 2], config)
    assert all(m.content["config"]["proximal-mu"] == 0.1 for m in msgs)
    assert dict(config) == {"lr": 0.5}  # the caller's config is not changed
    evaluate = strategy.configure_evaluate(
        1, to_record({"w": f32(0)}), config, NodesOnlyGrid([1, 2])
    )
    assert all("proximal-mu" not in m.content["config"] for m in evaluate)
    assert strategies.PROXIMAL_MU_KEY == "proximal-mu"


def test_fedprox_mu0_aggregates_as_fedavg():
    updates = [{"w": f32(1, 2)}, {"w": f32(4, 8)}, {"w": f32(0.1, 1 / 3)}]
    fedavg = run_round(FedAvg(), 1, {"w": f32(0, 0)}, updates, [1, 3, 7])
    fedprox = run_round(FedProx(proximal_mu=0.0), 1, {"w": f32(0, 0)}, updates, [1, 3, 7])
    np.testing.assert_array_equal(fedprox["w"], fedavg["w"])


@pytest.mark.parametrize("mu", [-0.1, float("nan"), "0.1", True])
def test_fedprox_mu_validation(mu):
    with pytest.raises(InvalidParameterError, match="proximal_mu"):
        FedProx(proximal_mu=mu)


# ---- stragglers -----------------------------------------------------------------------------


def test_straggler_selection_is_seeded_by_round():
    nodes = list(range(10, 20))
    a = select_stragglers(nodes, fraction=0.5, max_steps=4, seed=3, server_round=2)
    b = select_stragglers(nodes[::-1], fraction=0.5, max_steps=4, seed=3, server_round=2)
    c = select_stragglers(nodes, fraction=0.5, max_steps=4, seed=3, server_round=3)
    assert a == b and a != c and len(a) == 5
    assert all(1 <= k <= 4 for k in a.values()) and set(a) <= set(nodes)
    assert select_stragglers(nodes, fraction=0.0, max_steps=4, seed=3, server_round=2) == {}


def test_stragglers_get_local_steps_and_fedavg_drops_them():
    strategy = FedAvg(stragglers=0.5, straggler_max_steps=3, seed=5)
    msgs = configure(strategy, 1, {"w": f32(0)}, [1, 2, 3, 4])
    stragglers = select_stragglers([1, 2, 3, 4], fraction=0.5, max_steps=3, seed=5, server_round=1)
    for msg in msgs:
        node = msg.metadata.dst_node_id
        assert msg.content["config"].get("local-steps") == stragglers.get(node)
        assert msg.content["config"]["server-round"] == 1
    values = {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    replies = [
        reply(m, f"r{m.metadata.dst_node_id}", {"w": f32(values[m.metadata.dst_node_id])})
        for m in msgs
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    kept = [v for n, v in values.items() if n not in stragglers]
    np.testing.assert_allclose(arrays["w"].numpy(), f32(np.mean(kept)))
    assert sorted(d["node"] for d in strategy.dropped) == sorted(stragglers)
    assert all("straggler" in d["reason"] for d in strategy.dropped)
    assert strategy.rejected == []


def test_fedprox_aggregates_the_partial_work_of_stragglers():
    strategy = FedProx(stragglers=0.5, straggler_max_steps=3, seed=5)
    msgs = configure(strategy, 1, {"w": f32(0)}, [1, 2, 3, 4])
    assert sum("local-steps" in m.content["config"] for m in msgs) == 2
    replies = [reply(m, "r", {"w": f32(m.metadata.dst_node_id)}) for m in msgs]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_array_equal(arrays["w"].numpy(), f32(2.5))
    assert strategy.dropped == []
    assert FedProx(drop_stragglers=True).drop_stragglers


def test_no_stragglers_by_default():
    msgs = configure(FedAvg(), 1, {"w": f32(0)}, [1, 2, 3])
    assert all("local-steps" not in m.content["config"] for m in msgs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"stragglers": 1.5}, "stragglers"),
        ({"straggler_max_steps": 0}, "straggler_max_steps"),
        ({"drop_stragglers": "yes"}, "drop_stragglers"),
    ],
)
def test_straggler_parameter_validation(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        FedAvg(**kwargs)


# ---- server optimizers (Hsu et al. 2019; Reddi et al. 2021) -------------------------------


def two_rounds(strategy, start, rounds):
    """Feed ``rounds`` (lists of (arrays, weight)) one after another; return each result."""
    current, out = start, []
    for r, updates in enumerate(rounds, start=1):
        current = run_round(strategy, r, current, [u for u, _ in updates], [w for _, w in updates])
        out.append(current)
    return out


ROUNDS = [
    [({"w": f32(1, 2), "b": f32(0.3)}, 1), ({"w": f32(4, 8), "b": f32(-1)}, 3)],
    [({"w": f32(-1, 0.5), "b": f32(2)}, 2), ({"w": f32(0.1, 1 / 3), "b": f32(1e-8)}, 5)],
]
START = {"w": f32(0.5, -0.5), "b": f32(0)}


def test_fedavgm_lr1_no_momentum_is_fedavg_exactly():
    ours = two_rounds(FedAvgM(server_learning_rate=1.0, server_momentum=0.0), START, ROUNDS)
    fedavg = two_rounds(FedAvg(), START, ROUNDS)
    for a, b in zip(ours, fedavg, strict=True):
        for name in a:
            np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.parametrize("cls", [FedAdagrad, FedAdam, FedYogi])
def test_adaptive_server_optimizers_tend_to_fedavg(cls):
    big = 1e9
    strategy = cls(eta=big, tau=big, beta_1=0.0, beta_2=0.0, initial_accumulator=0.0)
    ours = two_rounds(strategy, START, ROUNDS)
    fedavg = two_rounds(FedAvg(), START, ROUNDS)
    for a, b in zip(ours, fedavg, strict=True):
        for name in a:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-6, atol=1e-7)


def test_fedavgm_golden_through_messages():
    strategy = FedAvgM(server_learning_rate=0.5, server_momentum=0.9)
    x1 = run_round(strategy, 1, {"w": f32(1.0)}, [{"w": f32(0.0)}, {"w": f32(1.0)}], [1, 1])
    # delta = 0.5 - 1 = -0.5, v = -0.5, x = 1 - 0.25
    np.testing.assert_allclose(x1["w"], f32(0.75))
    x2 = run_round(strategy, 2, x1, [{"w": f32(0.25)}, {"w": f32(0.25)}])
    # delta = -0.5, v = 0.9 * -0.5 - 0.5 = -0.95, x = 0.75 - 0.475
    np.testing.assert_allclose(x2["w"], f32(0.275), rtol=1e-6)
    np.testing.assert_allclose(strategy.velocity["w"], f32(-0.95), rtol=1e-6)


def flower_rounds(strategy, start, rounds):
    """The same rounds through one of Flower's strategies (its own reply format)."""
    current, out = start, []
    for r, updates in enumerate(rounds, start=1):
        nodes = list(range(1, len(updates) + 1))
        msgs = configure(strategy, r, current, nodes)
        replies = [
            Message(
                RecordDict({"arrays": to_record(u), "metrics": MetricRecord({"num-examples": w})}),
                reply_to=m,
            )
            for m, (u, w) in zip(msgs, updates, strict=True)
        ]
        arrays, _ = strategy.aggregate_train(r, replies)
        current = numpy(arrays)
        out.append(current)
    return out


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            lambda: FedAvgM(server_learning_rate=0.7, server_momentum=0.9),
            lambda: flower.FedAvgM(server_learning_rate=0.7, server_momentum=0.9),
        ),
        (
            lambda: FedAdagrad(eta=0.1, tau=0.01, initial_accumulator=0.0),
            lambda: flower.FedAdagrad(eta=0.1, tau=0.01),
        ),
        (
            lambda: FedYogi(eta=0.1, beta_1=0.9, beta_2=0.99, tau=0.01, initial_accumulator=0.0),
            lambda: flower.FedYogi(eta=0.1, beta_1=0.9, beta_2=0.99, tau=0.01),
        ),
        (  # Flower's FedAdam adds a bias correction, which is 1 when beta_1 = beta_2 = 0
            lambda: FedAdam(eta=0.1, beta_1=0.0, beta_2=0.0, tau=0.01, initial_accumulator=0.0),
            lambda: flower.FedAdam(eta=0.1, beta_1=0.0, beta_2=0.0, tau=0.01),
        ),
    ],
    ids=["fedavgm", "fedadagrad", "fedyogi", "fedadam"],
)
def test_server_optimizers_match_flower(ours, theirs):
    a = two_rounds(ours(), START, ROUNDS)
    b = flower_rounds(theirs(), START, ROUNDS)
    for x, y in zip(a, b, strict=True):
        for name in x:
            np.testing.assert_allclose(x[name], y[name], rtol=1e-5, atol=1e-7)


def test_server_optimizer_needs_configure_first():
    strategy = FedAdam()
    (msg,) = configure(FedAvg(min_train_clients=1, min_available_clients=1), 1, START, [1])
    with pytest.raises(StrategyError, match="configure_train"):
        strategy.aggregate_train(1, [reply(msg, "r", START)])


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (FedAvgM, {"server_momentum": 1.0}, "server_momentum"),
        (FedAvgM, {"server_learning_rate": 0}, "server_learning_rate"),
        (FedAdam, {"tau": 0}, "tau"),
        (FedYogi, {"beta_2": 1.0}, "beta_2"),
        (FedAdagrad, {"eta": float("inf")}, "eta"),
        (FedAdam, {"initial_accumulator": -1}, "initial_accumulator"),
    ],
)
def test_server_optimizer_parameter_validation(cls, kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        cls(**kwargs)


# ---- robust rules ---------------------------------------------------------------------------

HONEST = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02]
OUTLIER = 1e6


def planted(rule):
    """Six honest clients near 1 and one sending 1e6 (finite: it passes the checks)."""
    updates = [{"w": f32(v, -v)} for v in HONEST] + [{"w": f32(OUTLIER, OUTLIER)}]
    return run_round(rule, 1, {"w": f32(0, 0)}, updates, [10] * 7)["w"]


@pytest.mark.parametrize(
    "make",
    [
        FedMedian,
        lambda: FedTrimmedAvg(beta=0.2),
        lambda: Krum(num_malicious=1),
        lambda: MultiKrum(num_malicious=1),
        lambda: Bulyan(num_malicious=1),
    ],
    ids=["fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan"],
)
def test_robust_rules_resist_a_planted_outlier_that_breaks_fedavg(make):
    broken = planted(FedAvg())
    assert broken[0] > 1e5  # one client moved the FedAvg model by 1e5
    robust = planted(make())
    np.testing.assert_allclose(robust, f32(1, -1), atol=0.1)


def test_krum_strategies_record_their_selection():
    strategy = Krum(num_malicious=1)
    planted(strategy)
    (entry,) = strategy.selections
    assert entry["round"] == 1 and len(entry["selected"]) == 1 and "r6" not in entry["selected"]
    multi = MultiKrum(num_malicious=1, num_selected=3)
    planted(multi)
    assert len(multi.selections[0]["selected"]) == 3


def test_robust_strategies_match_flower_strategies():
    updates = [{"w": f32(v, 2 * v)} for v in (3.0, -1.0, 7.0, 0.5, 2.0)]
    start = {"w": f32(0, 0)}
    for ours, theirs in [
        (FedMedian(), flower.FedMedian()),
        (FedTrimmedAvg(beta=0.2), flower.FedTrimmedAvg(beta=0.2)),
        (Krum(num_malicious=1), flower.Krum(num_malicious_nodes=1)),
    ]:
        a = two_rounds(ours, start, [[(u, 1) for u in updates]])
        b = flower_rounds(theirs, start, [[(u, 1) for u in updates]])
        np.testing.assert_allclose(a[0]["w"], b[0]["w"], rtol=1e-6, err_msg=type(ours).__name__)


def test_robust_preconditions_in_the_constructor():
    with pytest.raises(PreconditionError, match=r"bulyan.*n >= 4f \+ 3.*f = 1.*n = 6") as info:
        Bulyan(num_malicious=1, min_train_clients=6)
    assert (info.value.rule, info.value.n, info.value.f, info.value.required) == ("bulyan", 6, 1, 7)
    with pytest.raises(PreconditionError, match=r"krum.*n >= 2f \+ 3.*at least 7"):
        Krum(num_malicious=2, min_train_clients=6)
    with pytest.raises(PreconditionError, match="multikrum"):
        strategies.get("multikrum", num_malicious=1, min_train_clients=4)
    assert Bulyan(num_malicious=2).min_train_nodes == 11  # default: the rule's minimum
    assert Krum().min_train_nodes == 5 and FedMedian().min_train_nodes == 2
    assert Krum(num_malicious=0, min_train_clients=3).min_train_nodes == 3


def test_robust_preconditions_on_the_accepted_replies():
    strategy = Krum(num_malicious=1)
    msgs = configure(strategy, 1, {"w": f32(0)}, [1, 2, 3, 4, 5])
    replies = [reply(m, f"r{i}", {"w": f32(i)}) for i, m in enumerate(msgs)]
    replies[2] = reply(msgs[2], "r2", {"w": f32(np.nan)})  # rejected: 4 replies left
    with pytest.raises(PreconditionError, match=r"krum.*n = 4.*round 1") as info:
        strategy.aggregate_train(1, replies)
    assert info.value.n == 4 and info.value.f == 1
    assert strategy.rejected[0]["region"] == "r2"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FedTrimmedAvg(beta=0.5), "beta"),
        (lambda: Krum(num_malicious=-1), "num_malicious"),
        (lambda: MultiKrum(num_selected=0), "num_selected"),
        (lambda: Krum(num_selected=2), "multikrum"),
        (lambda: FedMedian(num_malicious=1), "num_malicious"),
    ],
)
def test_robust_parameter_validation(make, message):
    with pytest.raises(InvalidParameterError, match=message):
        make()


# ---- layerwise weighting criteria ------------------------------------------------------------


def test_layerwise_weighting_criteria_golden():
    strategy = Layerwise(
        layers=[
            {"match": "a/*", "weight": "inverse-loss"},
            {"match": "b/*", "weight": "update-norm"},
            {"match": "c/*", "weight": "uniform"},
        ]
    )
    current = {"a/k": f32(0, 0), "b/k": f32(0, 0), "c/k": f32(0), "d/k": f32(0)}
    updates = [
        {"a/k": f32(1, 1), "b/k": f32(3, 4), "c/k": f32(1), "d/k": f32(1)},
        {"a/k": f32(4, 4), "b/k": f32(0, 1), "c/k": f32(4), "d/k": f32(4)},
    ]
    out = run_round(strategy, 1, current, updates, [1, 3], [{"loss": 0.5}, {"loss": 3.0}])
    # inverse-loss: 1/0.5 = 2 and 3/3 = 1 -> (2 * 1 + 1 * 4) / 3 = 2
    np.testing.assert_allclose(out["a/k"], f32(2, 2))
    # update-norm: 1 * ||(3, 4)|| = 5 and 3 * ||(0, 1)|| = 3 -> (5 * (3, 4) + 3 * (0, 1)) / 8
    np.testing.assert_allclose(out["b/k"], f32(15 / 8, 23 / 8))
    np.testing.assert_allclose(out["c/k"], f32(2.5))  # uniform
    np.testing.assert_allclose(out["d/k"], f32(3.25))  # no rule: num-examples


def test_update_norm_with_no_movement_keeps_the_value():
    strategy = Layerwise(layers=[{"match": "*", "weight": "update-norm"}])
    out = run_round(strategy, 1, {"w": f32(2)}, [{"w": f32(2)}, {"w": f32(2)}])
    np.testing.assert_array_equal(out["w"], f32(2))


def test_inverse_loss_rejects_a_reply_without_loss():
    strategy = Layerwise(layers=[{"match": "*", "weight": "inverse-loss"}])
    out = run_round(
        strategy, 1, {"w": f32(0)}, [{"w": f32(1)}, {"w": f32(5)}], [1, 1], [{"loss": 1.0}, {}]
    )
    np.testing.assert_array_equal(out["w"], f32(1))
    assert "inverse-loss" in strategy.rejected[0]["reason"]


def test_weight_criterion_validation():
    with pytest.raises(LayerRuleError, match=r"'weight'.*inverse-loss.*Did you mean 'uniform'"):
        Layerwise(layers=[{"match": "*", "weight": "unifrom"}])
    with pytest.raises(LayerRuleError, match="weighted rule only"):
        Layerwise(layers=[{"match": "*", "rule": "local", "weight": "uniform"}])


# ---- state dicts -------------------------------------------------------------------------------


def params_for(name):
    return (
        {"layers": [{"match": "*", "rule": "uniform", "interval": 2}]}
        if name == "layerwise"
        else {}
    )


@pytest.mark.parametrize("name", strategies.available())
def test_state_dict_round_trip(name):
    strategy = strategies.get(name, **params_for(name))
    state = strategy.state_dict()
    assert state["strategy"] == type(strategy).__name__
    assert {"rejected", "failures", "dropped", "regions"} <= set(state)
    fresh = strategies.get(name, **params_for(name))
    fresh.load_state_dict(state)
    assert fresh.state_dict().keys() == state.keys()
    with pytest.raises(StateDictError, match="missing keys"):
        fresh.load_state_dict({k: v for k, v in state.items() if k != "rejected"})
    with pytest.raises(StateDictError, match="not"):
        fresh.load_state_dict({**state, "strategy": "Other"})


@pytest.mark.parametrize(
    "make",
    [
        lambda: FedAdam(eta=0.05, tau=0.1),
        lambda: FedYogi(eta=0.05, tau=0.1),
        lambda: FedAdagrad(eta=0.05, tau=0.1),
        lambda: FedAvgM(server_learning_rate=0.5, server_momentum=0.9),
    ],
    ids=["fedadam", "fedyogi", "fedadagrad", "fedavgm"],
)
def test_resuming_from_a_state_dict_continues_the_trajectory(make):
    original = make()
    first, second = two_rounds(original, START, ROUNDS)
    resumed = make()
    replay = make()
    (after_one,) = two_rounds(replay, START, ROUNDS[:1])
    state = replay.state_dict()
    for value in state.values():  # plain values: dicts of numpy arrays, lists, str
        assert isinstance(value, dict | list | str | type(None))
    resumed.load_state_dict(state)
    again = run_round(resumed, 2, after_one, [u for u, _ in ROUNDS[1]], [w for _, w in ROUNDS[1]])
    for name in second:
        np.testing.assert_array_equal(again[name], second[name])
    state["m" if "m" in state else "velocity"]["w"][:] = 99  # a copy: the strategy is unchanged
    assert not np.any(np.asarray((getattr(replay, "m", None) or replay.velocity)["w"]) == 99)
    assert first is not None
