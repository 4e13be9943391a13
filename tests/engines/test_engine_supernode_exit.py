"""A SuperNode refused by its SuperLink exits cleanly, even when told twice.

Flower 1.41's SuperNode sends itself SIGINT from each thread the SuperLink
refuses (heartbeat, retried Fleet calls); a second SIGINT used to interrupt
the first one's exit (-2 with a ``KeyboardInterrupt`` traceback, or a process
that never exits). ``fedglobal.engines.supernode_main`` runs the SuperNode so
that it does not (see its docstring).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from fedglobal.engines.flower import FlowerHome, start_superlink, start_supernode
from fedglobal.engines.processes import Supervisor, wait_until

pytestmark = pytest.mark.slow


def test_a_supernode_sent_sigint_three_times_in_a_row_exits_gracefully_with_0(tmp_path):
    home = FlowerHome(tmp_path / "home")
    with Supervisor(log_dir=tmp_path / "logs") as sup:
        link = start_superlink(sup, home)
        node = start_supernode(
            sup, home, superlink=link.address, region="europe", clientapp="per-message"
        )
        proc = node.supernode
        wait_until(
            lambda: proc.log_contains("SuperNode ID:"),
            timeout=120,
            what="the SuperNode to join",
            watch=[proc],
        )
        for pause in (0.02, 0.2, 0.0):  # as two refused threads and a late third would
            os.kill(proc.pid, signal.SIGINT)
            time.sleep(pause)
        wait_until(lambda: not proc.running(), timeout=30, what="the SuperNode to exit")
        log = proc.log_tail(40)
        assert proc.returncode == 0, log
        assert "SuperNode terminated gracefully." in log
        assert "KeyboardInterrupt" not in log and "Traceback" not in log, log


def test_a_stalled_exit_is_ended_by_the_backstop_after_a_repeated_sigint():
    child = textwrap.dedent(
        """
        import os, signal, threading
        from fedglobal.engines import supernode_main
        supernode_main.BACKSTOP_SECONDS = 0.5
        signal.signal(signal.SIGINT, supernode_main.shutdown_under_way)
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # armed once only
        print("still running", flush=True)
        threading.Event().wait()  # an exit that never finishes
        """
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stdout == "still running\n"
    assert "had not finished 0.5 s after a repeated SIGINT" in done.stderr
    assert time.monotonic() - started < 30
