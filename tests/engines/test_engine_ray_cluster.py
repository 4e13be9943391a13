"""Ray-backed engines on a real two-node Ray cluster (both nodes on loopback).

The cluster is started and stopped by the test through Ray's own API
(``ray.cluster_utils.Cluster``), by its handles: a head node and a worker node,
each ``node_ip_address = 127.0.0.1`` with one CPU. fedglobal attaches to it
(``[engine] ray_address``) and leaves it running; ``summary.json``'s
``placement`` must name both nodes.
"""

from __future__ import annotations

import copy

import pytest
from engine_helpers import REGIONS

import fedglobal
from fedglobal.errors import ConfigError, EngineError

pytestmark = pytest.mark.slow


@pytest.fixture
def two_node_cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        connect=False,
        shutdown_at_exit=False,  # stopped below, on every path
        head_node_args={
            "node_ip_address": "127.0.0.1",
            "num_cpus": 1,
            "include_dashboard": False,
        },
    )
    try:
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=1)
        cluster.wait_for_nodes(timeout=60)
        yield cluster
    finally:
        cluster.shutdown()


def _alive_nodes(cluster) -> set[str]:
    return {n["NodeID"] for n in cluster.global_state.node_table() if n["Alive"]}


def test_ray_engine_attaches_to_the_cluster_and_both_nodes_train(tiny, tmp_path, two_node_cluster):
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=1, output_dir=str(tmp_path))
    raw["engine"]["ray_address"] = two_node_cluster.address
    nodes = _alive_nodes(two_node_cluster)
    assert len(nodes) == 2
    result = fedglobal.simulate(raw, engine="ray", quiet=True)
    placement = result.summary["placement"]
    assert set(placement) == set(REGIONS)
    trained = {p["ray_node_id"] for p in placement.values()}
    assert trained == nodes, placement  # both of the cluster's nodes trained regions
    assert {p["host"] for p in placement.values()} == {"127.0.0.1"}
    assert _alive_nodes(two_node_cluster) == nodes  # the cluster is left running


def test_ray_address_must_be_host_and_port(tiny):
    raw = copy.deepcopy(tiny["raw"])
    for bad in ("ray://10.0.0.5:10001", "10.0.0.5", "head:port"):
        raw["engine"]["ray_address"] = bad
        with pytest.raises(ConfigError, match="engine.ray_address"):
            fedglobal.load_config(raw)


def test_a_malformed_ray_address_variable_is_named(tiny, monkeypatch):
    from fedglobal.config import load_config
    from fedglobal.engines.ray import ray_address

    monkeypatch.setenv("RAY_ADDRESS", "not-an-address")
    with pytest.raises(EngineError, match=r"\$RAY_ADDRESS = 'not-an-address'"):
        ray_address(load_config(copy.deepcopy(tiny["raw"])))
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    assert ray_address(load_config(copy.deepcopy(tiny["raw"]))) == "127.0.0.1:6379"
    raw = copy.deepcopy(tiny["raw"])
    raw["engine"]["ray_address"] = "10.0.0.5:6379"  # the experiment's own wins
    assert ray_address(load_config(raw)) == "10.0.0.5:6379"
