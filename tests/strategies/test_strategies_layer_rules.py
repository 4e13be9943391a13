"""Layer rules: parsing, first-match-wins, local/frozen/interval plans."""

import pytest

from strategies.errors import LayerRuleError
from strategies.layer_rules import LayerRule, parse_rules, resolve_plan

NAMES = [
    "dense/kernel",
    "dense/bias",
    "batch_normalization/gamma",
    "batch_normalization/moving_mean",
    "output/kernel",
    "output/bias",
]


def test_defaults_to_weighted():
    plan, local = resolve_plan((), NAMES, 1)
    assert plan == dict.fromkeys(NAMES, "weighted") and local == []


def test_local_frozen_uniform():
    rules = parse_rules(
        [
            {"match": "*batch_normalization*", "rule": "local"},
            {"match": "output/*", "rule": "frozen"},
            {"match": "dense/bias", "rule": "uniform"},
        ]
    )
    plan, local = resolve_plan(rules, NAMES, 1)
    assert plan == {
        "dense/kernel": "weighted",
        "dense/bias": "uniform",
        "batch_normalization/gamma": "keep",
        "batch_normalization/moving_mean": "keep",
        "output/kernel": "keep",
        "output/bias": "keep",
    }
    assert local == ["batch_normalization/gamma", "batch_normalization/moving_mean"]


def test_first_match_wins():
    rules = parse_rules(
        [{"match": "output/bias", "rule": "uniform"}, {"match": "output/*", "rule": "local"}]
    )
    plan, local = resolve_plan(rules, NAMES, 1)
    assert plan["output/bias"] == "uniform"
    assert plan["output/kernel"] == "keep" and local == ["output/kernel"]


def test_interval_round_1_vs_2():
    rules = parse_rules([{"match": "dense/*", "rule": "uniform", "interval": 2}])
    plan1, local1 = resolve_plan(rules, NAMES, 1)
    plan2, local2 = resolve_plan(rules, NAMES, 2)
    assert plan1["dense/kernel"] == "keep" and local1 == ["dense/kernel", "dense/bias"]
    assert plan2["dense/kernel"] == "uniform" and local2 == []
    assert plan1["output/kernel"] == plan2["output/kernel"] == "weighted"


def test_pattern_matching_nothing():
    rules = parse_rules([{"match": "*conv*", "rule": "local"}])
    with pytest.raises(LayerRuleError, match=r"layers\[0\].*'\*conv\*'.*'dense/kernel'"):
        resolve_plan(rules, NAMES, 1)


def test_bad_rule_name_suggests():
    with pytest.raises(LayerRuleError, match=r"layers\[1\].*'locl'.*Did you mean 'local'"):
        parse_rules([{"match": "a"}, {"match": "b", "rule": "locl"}])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"match": "a", "rul": "local"}, r"unknown key 'rul'.*match, rule, interval.*'rule'"),
        ({"rule": "local"}, "missing required key 'match'"),
        ({"match": "", "rule": "local"}, "non-empty"),
        ({"match": "a", "interval": 0}, "interval.*>= 1"),
        ({"match": "a", "interval": 1.5}, "interval.*int"),
        ({"match": "a", "rule": "local", "interval": 2}, "weighted/uniform"),
        ("dense/*", "expected a dict"),
    ],
)
def test_parse_errors(entry, message):
    with pytest.raises(LayerRuleError, match=message):
        parse_rules([entry])


def test_single_rule_not_in_a_list():
    with pytest.raises(LayerRuleError, match="list"):
        parse_rules({"match": "a"})


def test_layer_rule_objects_and_round_trip():
    rule = LayerRule("dense/*", "uniform", 3)
    assert parse_rules([rule, rule.to_dict()]) == (rule, rule)
