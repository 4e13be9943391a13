"""The ``deployment`` engine on loopback: real SuperLink, SuperNodes and ``flwr run`` processes.

Plain (every message that crosses recorded and checked), TLS (the documented
``fedglobal deploy --tls``), and TLS with SuperNode authentication (an
unregistered SuperNode and a plain-HTTP SuperNode are refused).
"""

from __future__ import annotations

import copy
import http.client
import math
import ssl

import pandas as pd
import pytest
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

from fedglobal import data
from fedglobal.config import load_config
from fedglobal.engines.deployment import LoopbackDeployment
from fedglobal.engines.flower import list_supernodes
from fedglobal.engines.processes import http_ok, wait_until
from fedglobal.engines.tls import make_auth_keys
from fedglobal.protocol import TRAINED_BY_KEY, WHY_KEY
from fedglobal.run.folder import new_run_dir
from fedglobal.run.results import load_run
from tests.engines.engine_helpers import REGIONS, run_cli, write_experiment

pytestmark = pytest.mark.slow

#: What a client may put in a ConfigRecord: its region, the round, and the names
#: of columns, categories and labels (statistics query); never values of rows.
# + where the region trained (fedglobal.engines.placement) and which path trained it, and why
# (fedglobal.protocol)
CLIENT_CONFIG_KEYS = {
    "region",
    "round",
    "features",
    "labels",
    "host",
    "pid",
    "ray-node",
    "ray-ip",
    TRAINED_BY_KEY,
    WHY_KEY,
}


def _scalar(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def test_only_weights_counts_and_scalar_metrics_cross_the_wire(deployment_run):
    result = deployment_run["result"]
    shapes = {v.path: tuple(v.shape) for v in result.model.weights}
    messages = deployment_run["messages"]
    replies = [m for direction, m in messages if direction == "client->server"]
    instructions = [m for direction, m in messages if direction == "server->client"]
    kinds = pd.Series([m.metadata.message_type for m in replies]).value_counts().to_dict()
    rounds = result.config.experiment.rounds
    assert kinds == {"query": 3, "evaluate": 3 * (rounds + 1), "train": 3 * rounds}
    assert len(instructions) == len(replies)

    raw_values = {float(v) for v in deployment_run["rows"][["x1", "x2", "y"]].to_numpy().ravel()}
    for message in replies:
        assert not message.has_error(), message.error
        for name, record in message.content.items():
            if isinstance(record, ArrayRecord):
                assert message.metadata.message_type == "train"
                got = {k: tuple(a.shape) for k, a in record.items()}
                assert got == shapes  # exactly the model's variables, nothing else
            elif isinstance(record, MetricRecord):
                assert len(record) <= 20, f"{name}: {len(record)} values is not a summary"
                for key, value in record.items():
                    assert _scalar(value), f"{name}/{key} = {value!r} is not a scalar"
                    assert math.isfinite(value)
                    assert float(value) not in raw_values, f"{name}/{key} equals a raw value"
            elif isinstance(record, ConfigRecord):
                for key, value in record.items():
                    assert key in CLIENT_CONFIG_KEYS or key.startswith("vocab/"), key
                    assert isinstance(value, str | int) or all(isinstance(v, str) for v in value)
            else:
                pytest.fail(f"unexpected record {name!r}: {type(record).__name__}")
    for message in instructions:  # the server sends weights and its config, nothing else
        for record in message.content.values():
            if isinstance(record, ArrayRecord):
                assert {k: tuple(a.shape) for k, a in record.items()} == shapes


def test_each_supernode_carries_its_region_and_reads_only_its_own_file(deployment_run):
    configs = deployment_run["node_configs"]
    assert set(configs) == set(REGIONS)
    rows = deployment_run["rows"]
    for region, config in configs.items():
        assert config["region"] == region
        own = pd.read_parquet(config["data-path"])
        assert set(own.region) == {region}
        assert len(own) == int((rows.region == region).sum())
    # the shared source was deleted before the SuperNodes started: they read their own files
    result = deployment_run["result"]
    assert result.summary["engine"] == "deployment"
    placement = result.summary["placement"]  # each region trained on its own SuperNode
    assert set(placement) == set(REGIONS)
    assert all(p["node"].startswith("supernode ") for p in placement.values())
    assert len({p["node"] for p in placement.values()}) == len(REGIONS)
    assert len({p["pid"] for p in placement.values()}) == len(REGIONS)
    assert set(result.history.region) - {"all"} == set(REGIONS)
    assert list(result.metric("r2").index) == [0, 1, 2]


def test_deploy_command_with_tls(tiny, tmp_path):
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"]["rounds"] = 1
    toml = write_experiment(tmp_path / "tls.toml", raw)
    proc = run_cli("deploy", str(toml), "--tls", "--output-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "SuperLink https://127.0.0.1:" in proc.stderr and "(TLS)" in proc.stderr
    (run_dir,) = list((tmp_path / "runs").iterdir())
    result = load_run(run_dir)
    assert result.summary["engine"] == "deployment"
    assert list(result.metric("r2").index) == [0, 1]


def test_tls_and_auth_refuse_plain_and_unregistered_supernodes(tiny, tmp_path):
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=1, output_dir=str(tmp_path / "runs"))
    cfg = load_config(raw)
    regions = data.list_regions(cfg)
    with LoopbackDeployment(
        cfg, regions, tls=True, auth=True, workdir=tmp_path / "work"
    ) as deployment:
        link = deployment.superlink
        assert link.url.startswith("https://") and http_ok(
            f"{link.url}/health", cafile=link.ca_cert
        )
        # a plain HTTP request to the TLS port gets no HTTP answer
        assert not http_ok(f"http://{link.address}/health")
        conn = http.client.HTTPConnection(*link.address.split(":"), timeout=5)
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/health")
            conn.getresponse()
        conn.close()
        # HTTPS without trusting our CA is refused too
        assert not http_ok(f"{link.url}/health")
        with pytest.raises(ssl.SSLError):
            ctx = ssl.create_default_context()
            import socket

            with socket.create_connection(("127.0.0.1", link.port), timeout=5) as sock:
                ctx.wrap_socket(sock, server_hostname="127.0.0.1")

        (stranger,) = make_auth_keys(tmp_path / "stranger", ["stranger"])
        unregistered = deployment.add_supernode(
            "europe", auth_key=stranger.private, name="unregistered", max_wait_time=15
        )
        plain = deployment.add_supernode("asia", insecure=True, name="plain", max_wait_time=15)
        run_dir = new_run_dir(cfg)
        outcome = deployment.run(run_dir, quiet=True)
        assert outcome.ok, outcome.describe()
        wait_until(
            lambda: not unregistered.running() and not plain.running(),
            timeout=90,
            what="the refused SuperNodes to give up",
        )
        assert unregistered.supernode.returncode != 0
        assert plain.supernode.returncode != 0
        log = unregistered.supernode.log_tail(60)
        assert "Failed to initialize the connection to the SuperLink" in log, log
        nodes = list_supernodes(deployment.supervisor, deployment.home)
        assert len(nodes) == 3  # the registered keys; the strangers never became nodes
    result = load_run(run_dir)
    assert result.summary["num_regions"] == 3
    assert set(result.history.region) - {"all"} == set(REGIONS)
