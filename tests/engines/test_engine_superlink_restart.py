"""The SuperLink dies mid-run (deployment engine): what fedglobal promises.

1. The run fails at once with an error that names the SuperLink (address,
   pid, exit code, its log), not after the run timeout.
2. While the SuperLink is down, the SuperNodes keep retrying (Flower 1.41:
   exponential back-off up to 20 s, forever unless ``--max-wait-time``).
3. A SuperLink restarted on the same port starts from empty in-memory state:
   it answers the old SuperNodes' signed requests with 401 ("Invalid SuperNode
   authentication"), and each old SuperNode shuts itself down. Flower 1.41
   does not re-register them. (A persistent ClientApp process caught mid-task
   may keep retrying its push to the dead SuperNode; ``fedglobal client`` and
   the deployment stop it by pid, which the autouse fixture checks.)
4. A SuperNode started again joins the restarted SuperLink.

Every wait is bounded; every process is stopped by pid (the autouse fixture checks).
"""

from __future__ import annotations

import copy
import io
import threading
import time

import pytest

from fedglobal import data
from fedglobal.config import load_config
from fedglobal.engines.deployment import LoopbackDeployment
from fedglobal.engines.flower import start_superlink
from fedglobal.engines.processes import wait_until
from fedglobal.errors import EngineError
from fedglobal.run.folder import new_run_dir

pytestmark = pytest.mark.slow


class Lines(io.TextIOBase):
    """A stream for the run's progress that flags round 0's line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.round_zero = threading.Event()

    def write(self, text: str) -> int:
        self.lines += text.splitlines()
        if any(line.startswith("round 0/") for line in text.splitlines()):
            self.round_zero.set()
        return len(text)


def test_superlink_killed_mid_run_fails_the_run_naming_it_and_old_supernodes_exit(tiny, tmp_path):
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"].update(rounds=3, output_dir=str(tmp_path / "runs"))
    raw["engine"]["connect_timeout"] = 240.0
    cfg = load_config(raw)
    regions = data.list_regions(cfg)
    deployment = LoopbackDeployment(cfg, regions, workdir=tmp_path / "work")
    out = Lines()
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = deployment.run(new_run_dir(cfg), out=out)
        except EngineError as exc:
            outcome["error"] = exc

    try:
        deployment.start()
        link = deployment.superlink
        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        assert out.round_zero.wait(600), "\n".join(out.lines[-40:])
        link.process.kill()  # SIGKILL by pid: a crash, mid-run (round 1 is under way)
        killed = time.monotonic()
        runner.join(timeout=60)
        assert not runner.is_alive(), "the run did not notice the SuperLink died"
        noticed = time.monotonic() - killed
        error = str(outcome.get("error"))
        assert f"the SuperLink ({link.url}, pid {link.process.pid}) exited with code -9" in error
        assert "during run " in error and str(link.process.log_path) in error
        assert noticed < 30, noticed

        # while it is down, the SuperNodes keep retrying
        nodes = list(deployment.supernodes.values())
        wait_until(
            lambda: all(n.supernode.log_contains("Connection attempt failed") for n in nodes),
            timeout=60,
            what="the SuperNodes to notice the SuperLink is gone",
        )
        assert all(n.running() for n in nodes)

        # restarted on the same port, with fresh state: the old SuperNodes are refused and exit
        deployment.superlink = start_superlink(
            deployment.supervisor, deployment.home, port=link.port, timeout=120
        )
        try:
            wait_until(
                lambda: not any(n.supernode.running() for n in nodes),
                timeout=120,  # their next retry comes within Flower's 20 s maximum back-off
                what="the old SuperNodes to exit",
            )
        except EngineError as exc:
            logs = "\n".join(f"{p.name}:\n{p.log_tail(30)}" for n in nodes for p in n.processes)
            pytest.fail(f"{exc}\n{logs}")
        for node in nodes:
            assert node.supernode.log_contains("SuperNode terminated gracefully"), (
                node.supernode.log_tail(20)
            )

        # started again, a SuperNode joins the restarted SuperLink
        again = deployment.add_supernode(regions[0], name="again")
        wait_until(
            lambda: again.supernode.log_contains("SuperNode ID:"),
            timeout=120,
            what="a new SuperNode to join the restarted SuperLink",
            watch=[again.supernode],
        )
    finally:
        deployment.stop()


def test_fedglobal_run_names_an_unreachable_remote_superlink(tmp_path):
    """``fedglobal run``: the SuperLink is on another machine; after the stream ends, it is gone."""
    from fedglobal.engines.flower import FlowerHome, run_status
    from fedglobal.engines.processes import Supervisor, free_port

    home = FlowerHome(tmp_path / "home")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    home.connect(address)
    with Supervisor(log_dir=tmp_path / "logs") as sup:
        with pytest.raises(EngineError, match=f"the SuperLink at {address} cannot be reached"):
            run_status(sup, home, 7)


def test_fedglobal_client_says_to_start_again_when_its_supernode_lost_the_superlink():
    from types import SimpleNamespace

    from fedglobal.engines.deployment import _lost_superlink_hint

    def node(log: str) -> SimpleNamespace:
        return SimpleNamespace(supernode=SimpleNamespace(log_contains=lambda text: text in log))

    lost = node("WARNING: Connection attempt failed, retrying in 5.09 seconds\\nterminated")
    hint = _lost_superlink_hint(lost, "server:9092")
    assert "lost the SuperLink at server:9092" in hint
    assert "start `fedglobal client` again" in hint
    assert _lost_superlink_hint(node("Traceback ... ValueError"), "server:9092") == ""
