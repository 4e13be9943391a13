"""Strategies of your own by component reference: experiments/custom_strategy.py.

The registry resolves ``"module:Class"`` and ``"path/file.py:Class"``; an
experiment file's relative ``.py`` path is relative to the file. The worked
example (``PowerFedAvg``) is checked against FedAvg and the uniform average on
real flwr Messages, and run end to end from its experiment file.
"""

from __future__ import annotations

from itertools import count
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid

import strategies
from fedglobal.config import load_config
from fedglobal.errors import ConfigError
from strategies.errors import InvalidParameterError, StrategyError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "experiments" / "custom_strategy.py"
REFERENCE = f"{EXAMPLE}:PowerFedAvg"
_ids = count(1)


pytestmark = pytest.mark.usefixtures("task_identity")


class _Nodes(Grid):
    """Only ``get_node_ids``: sampling is all configure_train asks of the Grid."""

    def __init__(self, node_ids: list[int]) -> None:
        self.node_ids = node_ids

    def get_node_ids(self) -> list[int]:
        return list(self.node_ids)

    def set_run(self, run):  # pragma: no cover - not called
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # pragma: no cover
        raise NotImplementedError

    def push_messages(self, messages):  # pragma: no cover
        raise NotImplementedError

    def pull_messages(self, message_ids):  # pragma: no cover
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover
        raise NotImplementedError


def _record(arrays: dict) -> ArrayRecord:
    return ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()})


def _aggregate(strategy, updates: list[float], counts: list[int]) -> float:
    """One round: region i sends ``w = updates[i]`` with ``counts[i]`` examples."""
    nodes = list(range(1, len(updates) + 1))
    msgs = list(strategy.configure_train(1, _record({"w": [0.0]}), ConfigRecord(), _Nodes(nodes)))
    for msg in msgs:
        msg.metadata.__dict__["_message_id"] = f"m{next(_ids)}"
    msgs.sort(key=lambda m: m.metadata.dst_node_id)
    replies = [
        Message(
            RecordDict(
                {
                    "arrays": _record({"w": [u]}),
                    "metrics": MetricRecord({"num-examples": n}),
                    "meta": ConfigRecord({"region": f"r{i}"}),
                }
            ),
            reply_to=m,
        )
        for i, (m, u, n) in enumerate(zip(msgs, updates, counts, strict=True))
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    return float(arrays["w"].numpy()[0])


def test_power_weights_interpolate_between_fedavg_and_uniform():
    updates, counts = [1.0, 5.0, 9.0], [100, 25, 4]
    fedavg = _aggregate(strategies.get("fedavg"), updates, counts)
    assert _aggregate(strategies.get(REFERENCE, power=1.0), updates, counts) == pytest.approx(
        fedavg, rel=1e-6
    )
    uniform = _aggregate(strategies.get(REFERENCE, power=0.0), updates, counts)
    assert uniform == pytest.approx(5.0, rel=1e-6)
    sqrt = _aggregate(strategies.get(REFERENCE), updates, counts)  # power 0.5
    assert sqrt == pytest.approx((10 * 1 + 5 * 5 + 2 * 9) / 17, rel=1e-6)
    assert fedavg < sqrt < uniform


def test_reference_forms_and_parameters():
    strategy = strategies.get({"name": REFERENCE, "power": 0.25, "fraction_train": 0.5})
    assert type(strategy).__name__ == "PowerFedAvg" and strategy.power == 0.25
    again = type(strategy)(**strategy.get_config())
    assert again.get_config() == strategy.get_config()
    # a file is imported once per process: the same class every time
    assert type(strategies.get(REFERENCE)) is type(strategy)
    assert type(strategies.get("strategies.fedprox:FedProx")) is strategies.FedProx
    with pytest.raises(InvalidParameterError, match=r"power must be a number in \[0, 1\]"):
        strategies.get(REFERENCE, power=2)
    with pytest.raises(InvalidParameterError, match=r"'powr'.*Did you mean 'power'"):
        strategies.get(REFERENCE, powr=0.5)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (f"{EXAMPLE}:PowerFedAvgg", r"has no 'PowerFedAvgg'; did you mean 'PowerFedAvg'"),
        ("no/such/file.py:Cls", r"no such Python file"),
        ("no_such_package.mod:Cls", r"importing 'no_such_package.mod' failed"),
        ("flwr.serverapp.strategy:FedAvg", r"not a subclass of strategies.FedAvg"),
        ("strategies:get", r"not a subclass of strategies.FedAvg"),
        ("strategies:", r"not a component reference: expected 'module:attr'"),
    ],
)
def test_a_bad_reference_says_what_is_expected(name, message):
    with pytest.raises(StrategyError, match=message):
        strategies.get(name)


def test_the_experiment_file_resolves_its_reference_relative_to_itself():
    cfg = load_config(ROOT / "experiments" / "custom_strategy.toml")
    assert cfg.strategy.name == REFERENCE  # absolute: the same in every process
    assert cfg.strategy.params == {"power": 0.5}
    assert load_config(cfg.to_dict()).strategy == cfg.strategy  # round-trips
    with pytest.raises(ConfigError, match=r"\[strategy\]: strategy name: cannot load"):
        load_config(cfg.to_dict(), {"strategy.name": "custom.py:PowerFedAvg"})


@pytest.mark.slow
def test_the_custom_strategy_experiment_runs(tmp_path):
    import fedglobal

    cfg = load_config(
        ROOT / "experiments" / "custom_strategy.toml",
        {"experiment.rounds": 2, "experiment.output_dir": str(tmp_path), "model.hidden": [16]},
    )
    result = fedglobal.simulate(cfg, quiet=True)
    assert result.summary["strategy"] == REFERENCE
    h = result.history
    r2 = h[(h.region == "all") & (h.split == "test") & (h.metric == "r2")].set_index("round")
    assert list(r2.index) == [0, 1, 2]
    assert r2.value[2] > r2.value[0]  # it learns
