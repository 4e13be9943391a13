"""Helpers of the engine tests: a tiny 3-region experiment, a Fleet recorder, process checks.

Every process these tests start (directly, or through fedglobal's engines)
inherits ``FEDGLOBAL_TEST_SESSION=<uuid>`` from this process's environment.
After each test, no live process may carry it and the test process may have
no live descendant: everything started was stopped.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import tomllib
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd

from fedglobal.engines.processes import DIE_WITH_PARENT, is_alive

SESSION_ENV = "FEDGLOBAL_TEST_SESSION"
SESSION = uuid.uuid4().hex
os.environ[SESSION_ENV] = SESSION
REGIONS = ("africa", "asia", "europe")
FEDGLOBAL = str(Path(sys.executable).with_name("fedglobal"))


def start_fedglobal(*args: str, log: Path) -> subprocess.Popen:
    """Start ``fedglobal ARGS`` in its own session, output to ``log``; stop it by pid."""
    return subprocess.Popen(
        [FEDGLOBAL, *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=DIE_WITH_PARENT,  # if pytest is killed, the command is stopped too
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def session_processes() -> list[int]:
    """Live processes (other than this one) that inherited this test session's marker."""
    marker = f"{SESSION_ENV}={SESSION}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0") and is_alive(int(entry)):
            found.append(int(entry))
    return found


def describe_pids(pids: list[int]) -> str:
    out = []
    for pid in pids:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            cmd = "?"
        out.append(f"{pid}: {cmd[:160]}")
    return "\n".join(out)


# -- the tiny experiment ---------------------------------------------------------------


def write_rows(path: Path, n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(
        {
            "region": rng.choice(list(REGIONS), n),
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
        }
    )
    rows["y"] = 2 * rows.x1 - rows.x2 + rng.normal(scale=0.1, size=n)
    rows.to_csv(path, index=False)
    return rows


def write_regions(path: Path, n_regions: int, rows_per_region: int = 20) -> None:
    """A CSV of ``n_regions`` regions (r00, r01, ...) of ``rows_per_region`` rows each."""
    rng = np.random.default_rng(0)
    n = n_regions * rows_per_region
    width = max(2, len(str(n_regions - 1)))
    rows = pd.DataFrame(
        {
            "region": np.repeat([f"r{i:0{width}d}" for i in range(n_regions)], rows_per_region),
            "x1": rng.normal(size=n),
            "x2": rng.normal(size=n),
        }
    )
    rows["y"] = 2 * rows.x1 - rows.x2 + rng.normal(scale=0.1, size=n)
    rows.to_csv(path, index=False)


def experiment(csv: Path, out: Path, *, rounds: int = 2, **experiment_keys) -> dict:
    """3 regions x ~100 rows, a 1-hidden-layer MLP, FedAvg, short timeouts."""
    return {
        "experiment": {
            "name": "tiny",
            "seed": 1,
            "rounds": rounds,
            "output_dir": str(out),
            "round_timeout": 60.0,
            **experiment_keys,
        },
        "data": {"source": f"csv:{csv}", "region": "region", "target": "y"},
        "model": {"name": "mlp", "hidden": [8]},
        "client": {"epochs": 1, "batch_size": 32, "learning_rate": 0.01},
        "strategy": {"name": "fedavg", "min_train_clients": 2, "min_evaluate_clients": 2},
        "engine": {"connect_timeout": 90.0},
    }


def write_experiment(path: Path, raw: dict) -> Path:
    import tomli_w

    path.write_text(tomli_w.dumps(raw))
    return path


def run_cli(
    *args: str, timeout: float = 400.0, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run the ``fedglobal`` console script to completion."""
    return subprocess.run(
        [FEDGLOBAL, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        preexec_fn=DIE_WITH_PARENT,  # if pytest is killed, the command is stopped too
    )


def load_toml(path: Path) -> dict:
    return tomllib.loads(Path(path).read_text())


# -- a recording proxy for the Fleet API -------------------------------------------------


class FleetRecorder:
    """A plain-HTTP reverse proxy between SuperNodes and the SuperLink that records traffic.

    Every request (path, body) and its response (status, body) is kept in
    ``exchanges``, so a test can decode every message that crossed.
    """

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host, int(port))
        self.exchanges: list[tuple[str, bytes, int, bytes]] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                conn = http.client.HTTPConnection(*recorder.upstream, timeout=60)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "connection", "content-length")
                }
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                conn.close()
                with recorder._lock:
                    recorder.exchanges.append((self.path, body, response.status, data))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = _forward
            do_GET = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FleetRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def messages(self) -> list[tuple[str, object]]:
        """Every Message that crossed, rebuilt from the recorded bytes: (direction, Message)."""
        from flwr.proto.fleet_pb2 import (  # pylint: disable=E0611
            PullMessagesResponse,
            PushMessagesRequest,
        )
        from flwr.proto.message_pb2 import (  # pylint: disable=E0611
            PullObjectRequest,
            PullObjectResponse,
            PushObjectRequest,
        )
        from flwr.supercore.inflatable.inflatable_object import iterate_object_tree
        from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

        objects: dict[str, bytes] = {}
        trees = []
        for path, body, status, data in self.exchanges:
            if status != 200:
                continue
            if path.endswith("/push-object"):
                req = PushObjectRequest.FromString(body)
                objects[req.object_id] = req.object_content
            elif path.endswith("/pull-object"):
                req = PullObjectRequest.FromString(body)
                res = PullObjectResponse.FromString(data)
                if res.object_content:
                    objects[req.object_id] = res.object_content
            elif path.endswith("/push-messages"):
                req = PushMessagesRequest.FromString(body)
                trees += [("client->server", t) for t in req.message_object_trees]
            elif path.endswith("/pull-messages"):
                res = PullMessagesResponse.FromString(data)
                trees += [("server->client", t) for t in res.message_object_trees]
        out = []
        for direction, tree in trees:
            ids = [t.object_id for t in iterate_object_tree(tree)]
            contents = {i: objects[i] for i in ids}
            out.append((direction, inflate_object_from_contents(tree.object_id, contents)))
        return out
