"""Load on the deployment engine: 10 SuperNodes on loopback, three times over.

Each repetition starts a SuperLink and 10 SuperNodes (10 regions, 20 rows
each, persistent ClientApp processes), runs one round and stops everything.
While it runs, a sampler records every TCP port on which any of the
deployment's processes listens. Afterwards no process of the deployment may be
alive (by its owner token; the autouse fixture also checks the test session's
marker), and none of those ports may still be listening: each can be bound again.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from fedglobal import data
from fedglobal.config import load_config
from fedglobal.engines.deployment import LoopbackDeployment
from fedglobal.engines.processes import owned_by, wait_until
from fedglobal.run.folder import new_run_dir
from fedglobal.run.results import load_run
from tests.engines.engine_helpers import describe_pids, experiment, write_regions

pytestmark = pytest.mark.slow

N_REGIONS = 10
REPEATS = 3
LISTEN = "0A"  # TCP state in /proc/net/tcp


def listening_sockets() -> dict[int, set[int]]:
    """Every LISTEN socket of this machine's network namespace: {socket inode: {port}}."""
    found: dict[int, set[int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == LISTEN:
                port = int(fields[1].rsplit(":", 1)[1], 16)
                found.setdefault(int(fields[9]), set()).add(port)
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def ports_listened_by(pids: list[int]) -> set[int]:
    sockets = listening_sockets()
    ports: set[int] = set()
    for pid in pids:
        for inode in socket_inodes(pid) & sockets.keys():
            ports |= sockets[inode]
    return ports


def listening_ports() -> set[int]:
    return {port for ports in listening_sockets().values() for port in ports}


def can_bind(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
    return True


class PortSampler:
    """Records, every 0.5 s, the ports on which processes carrying ``token`` listen."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.ports: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self.ports |= ports_listened_by(owned_by(self.token))

    def __enter__(self) -> PortSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def test_ten_supernodes_three_times_leave_no_process_and_no_listening_port(tmp_path):
    csv = tmp_path / "rows.csv"
    write_regions(csv, N_REGIONS)
    raw = experiment(csv, tmp_path / "runs", rounds=1, round_timeout=120.0)
    raw["engine"]["connect_timeout"] = 300.0  # 10 TensorFlow imports share the CPUs
    cfg = load_config(raw)
    regions = data.list_regions(cfg)
    assert len(regions) == N_REGIONS
    timings = []
    for repeat in range(REPEATS):
        started = time.perf_counter()
        deployment = LoopbackDeployment(cfg, regions, workdir=tmp_path / f"work-{repeat}")
        sampler = None
        try:
            deployment.start(supernodes=False)
            token = deployment.supervisor.token
            with PortSampler(token) as sampler:
                for region in regions:
                    deployment.add_supernode(region)
                nodes = list(deployment.supernodes.values())
                wait_until(
                    lambda nodes=nodes: all(n.ready() for n in nodes),
                    timeout=300,
                    what=f"{N_REGIONS} SuperNodes to connect and load their ClientApp",
                    watch=[p for n in nodes for p in n.processes],
                )
                ready_s = time.perf_counter() - started
                run_dir = new_run_dir(cfg)
                outcome = deployment.run(run_dir, quiet=True)
        finally:
            deployment.stop()
        assert outcome.ok, outcome.describe() + "".join(outcome.output[-40:])
        ports = sampler.ports
        expected = {deployment.superlink.port} | {n.port for n in deployment.supernodes.values()}
        assert expected <= ports, f"sampler missed {expected - ports}"
        # no process of this deployment is left ...
        left = owned_by(token)
        assert not left, f"repeat {repeat}: processes left behind:\n{describe_pids(left)}"
        # ... and none of its ports is still listening: each can be bound again
        still = ports & listening_ports()
        assert not still, f"repeat {repeat}: ports still listening: {sorted(still)}"
        assert all(can_bind(p) for p in ports), [p for p in ports if not can_bind(p)]
        result = load_run(run_dir)
        assert result.summary["num_regions"] == N_REGIONS
        assert not result.summary.get("failed_replies")
        assert set(result.history.region) - {"all"} == set(regions)
        timings.append((ready_s, time.perf_counter() - started, len(ports)))
    print(
        "\n".join(
            f"repeat {i}: {n} SuperNodes ready after {ready:.1f}s, whole run {total:.1f}s, "
            f"{ports} listening ports, all freed"
            for i, (ready, total, ports) in enumerate(timings)
            for n in [N_REGIONS]
        )
    )
