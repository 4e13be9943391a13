"""Flower's own processes, started and stopped by fedglobal: SuperLink, SuperNodes, ``flwr run``.

Shared by the Ray engine (:mod:`fedglobal.engines.ray`) and the deployment
engine (:mod:`fedglobal.engines.deployment`). Nothing here touches the user's
``~/.flwr`` or ``pyproject.toml``:

- :class:`FlowerHome` is a private ``FLWR_HOME`` holding the Flower app that
  ``flwr run`` submits (a generated ``pyproject.toml`` whose components are
  ``fedglobal.server.app:app`` and ``clients.app:app``, imported from the
  installed packages; runtime dependency installation is always disabled),
  the SuperLink connection ``fedglobal`` and the run configs;
- every process runs under a :class:`~fedglobal.engines.processes.Supervisor`
  (own session, owner token, stopped by pid on every exit path);
- ports come from the OS; every wait has a timeout.
"""

from __future__ import annotations

import json
import queue
import re
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import tomli_w

from fedglobal.engines import CLIENT_APP, SERVER_APP
from fedglobal.engines.processes import (
    ManagedProcess,
    Supervisor,
    executable,
    free_port,
    http_ok,
    wait_until,
)
from fedglobal.engines.tls import TlsFiles
from fedglobal.errors import EngineError
from fedglobal.runtime.quiet import verbose as verbose_console

CONNECTION = "fedglobal"
APP_NAME = "fedglobal-app"

#: The ServerApp's run_config keys and their defaults ([tool.flwr.app.config]).
RUN_CONFIG_DEFAULTS: dict[str, Any] = {
    "experiment-toml": "",
    "base-dir": ".",
    "run-dir": "runs/flwr",
    "quiet": False,
    "engine": "deployment",
    "expected-nodes": 0,
}

#: Log lines of Flower, Ray and TensorFlow not worth showing (kept in the captured output).
_NOISE = re.compile(
    r"oneDNN|cuda|cuInit|absl::InitializeLog|FutureWarning|warnings\.warn|"
    r"RAY_ACCEL_ENV_VAR|Since flwr 1\.32|To change federation size|simulation-config|"
    r"DeprecationWarning|return np\.array|Starting logstream|Using SuperLink|"
    r"Successfully installed|Starting Flower Simulation|Federation `|Start `flwr-serverapp`|"
    r"Manually terminating ClientAppActor|Successfully started run|\] RAW: |"
    r"^\s*$"
)
_RUN_ID = re.compile(r"Successfully started run (\d+)")
_ERROR_LINE = re.compile(r"\b(RunError|EngineError|DataError|ConfigError|ModelError|\w+Error):\s")


def app_pyproject() -> dict[str, Any]:
    """The ``pyproject.toml`` of the Flower app fedglobal submits (components only, no code)."""
    return {
        "build-system": {"requires": ["setuptools>=68"], "build-backend": "setuptools.build_meta"},
        "project": {
            "name": APP_NAME,
            "version": "1.0.0",
            "description": "fedglobal's ServerApp and ClientApp (installed packages)",
            "license": "Apache-2.0",
            "dependencies": [],
        },
        "tool": {
            "flwr": {
                "app": {
                    "publisher": "fedglobal",
                    "components": {"serverapp": SERVER_APP, "clientapp": CLIENT_APP},
                    "config": dict(RUN_CONFIG_DEFAULTS),
                }
            }
        },
    }


class FlowerHome:
    """A private ``FLWR_HOME``: the app to submit, the SuperLink connection, run configs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.app_dir = self.root / "app"
        self.app_dir.mkdir(parents=True, exist_ok=True)
        self.address: str | None = None  # the SuperLink of the ``fedglobal`` connection
        (self.app_dir / "pyproject.toml").write_text(tomli_w.dumps(app_pyproject()))

    def env(self) -> dict[str, str]:
        return {"FLWR_HOME": str(self.root)}

    def connect(self, address: str, *, ca_cert: str | Path | None = None) -> None:
        """Point the ``fedglobal`` connection at a SuperLink (HTTPS if ``ca_cert``)."""
        self.address = address
        conn: dict[str, Any] = {"address": address}
        if ca_cert is None:
            conn["insecure"] = True
        else:
            conn["root-certificates"] = str(Path(ca_cert).resolve())
        config = {"superlink": {"default": CONNECTION, CONNECTION: conn}}
        (self.root / "config.toml").write_text(tomli_w.dumps(config))


# -- short commands ------------------------------------------------------------------


def run_command(
    sup: Supervisor,
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> tuple[int, str]:
    """Run a short command under the supervisor; return (exit code, output)."""
    proc = sup.start(name, argv, env=env, capture=True)
    try:
        output, _ = proc.popen.communicate(timeout=timeout)
    except Exception as exc:
        sup.stop(proc)
        raise EngineError(f"`{' '.join(argv[:3])} ...` did not finish within {timeout:g}s") from exc
    finally:
        sup.stop(proc, timeout=2.0)
    return int(proc.popen.returncode or 0), output or ""


def flwr(sup: Supervisor, home: FlowerHome, *args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run the ``flwr`` CLI against the ``fedglobal`` connection of ``home``."""
    return run_command(
        sup, f"flwr-{args[0]}", [executable("flwr"), *args], env=home.env(), timeout=timeout
    )


def _json_tail(output: str) -> Any:
    start = output.find("{")
    if start < 0:
        raise EngineError(f"no JSON in the output of flwr: {output[-500:]}")
    return json.loads(output[start:])


# -- SuperLink ---------------------------------------------------------------------------


@dataclass
class SuperLink:
    """A running ``flower-superlink`` (all APIs on one HTTP(S) port)."""

    process: ManagedProcess
    port: int
    host: str
    ca_cert: Path | None = None
    simulation: bool = False

    @property
    def address(self) -> str:
        """Where processes on this machine reach it."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_cert else 'http'}://{self.address}"


def start_superlink(
    sup: Supervisor,
    home: FlowerHome,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    simulation: bool = False,
    tls: TlsFiles | None = None,
    auth: bool = False,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
) -> SuperLink:
    """Start ``flower-superlink`` and wait until it answers (``/health``).

    ``env`` adds environment variables for it and everything it starts.
    """
    if auth and tls is None:
        raise EngineError("SuperNode authentication needs TLS: pass the certificates too")
    port = port or free_port("0.0.0.0" if host in ("0.0.0.0", "::") else host)
    argv = [
        executable("flower-superlink"),
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    if simulation:
        argv.append("--simulation")
    if tls is None:
        argv.append("--insecure")
    else:
        argv += [
            "--ssl-certfile",
            str(tls.server_cert),
            "--ssl-keyfile",
            str(tls.server_key),
            "--ssl-ca-certfile",
            str(tls.ca_cert),
        ]
    if auth:
        argv.append("--enable-supernode-auth")
    # its SuperExec polls for runs every second by default
    extra = {**home.env(), "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1", **(env or {})}
    process = sup.start("superlink", argv, env=extra)
    link = SuperLink(
        process=process,
        port=port,
        host=host,
        ca_cert=tls.ca_cert if tls else None,
        simulation=simulation,
    )
    wait_until(
        lambda: http_ok(f"{link.url}/health", cafile=link.ca_cert),
        timeout=timeout,
        what=f"the SuperLink to answer on port {port}",
        watch=[process],
    )
    home.connect(link.address, ca_cert=link.ca_cert)
    return link


def register_supernodes(
    sup: Supervisor, home: FlowerHome, public_keys: Sequence[str | Path], *, timeout: float = 60.0
) -> list[int]:
    """Register SuperNode public keys with ``home``'s SuperLink (``flwr supernode register``)."""
    node_ids = []
    for key in public_keys:
        code, output = flwr(
            sup, home, "supernode", "register", str(key), CONNECTION, "--format", "json",
            timeout=timeout,
        )  # fmt: skip
        if code != 0:
            raise EngineError(f"registering the SuperNode key {key} failed: {output[-800:]}")
        node_ids.append(int(_json_tail(output)["node-id"]))
    return node_ids


def list_supernodes(sup: Supervisor, home: FlowerHome, *, timeout: float = 60.0) -> list[dict]:
    """The SuperLink's SuperNodes (``flwr supernode ls --format json``)."""
    code, output = flwr(
        sup, home, "supernode", "ls", CONNECTION, "--format", "json", timeout=timeout
    )
    if code != 0:
        raise EngineError(f"`flwr supernode ls` failed: {output[-800:]}")
    return list(_json_tail(output).get("nodes", []))


# -- SuperNodes ----------------------------------------------------------------------------


@dataclass
class SuperNode:
    """A running ``flower-supernode`` for one region, and its persistent ClientApp process."""

    region: str
    supernode: ManagedProcess
    port: int
    clientapp: ManagedProcess | None = None
    data_path: str | None = None

    @property
    def processes(self) -> list[ManagedProcess]:
        return [p for p in (self.supernode, self.clientapp) if p is not None]

    def running(self) -> bool:
        return self.supernode.running()

    def ready(self) -> bool:
        """Connected to the SuperLink, and its ClientApp process (if any) loaded."""
        connected = self.supernode.log_contains("SuperNode ID:")
        return connected and (self.clientapp is None or self.clientapp.log_contains("serving"))

    def kill(self) -> None:
        """Kill the SuperNode and its ClientApp process at once (SIGKILL), as a crash would."""
        for proc in self.processes:
            proc.kill()


def start_supernode(
    sup: Supervisor,
    home: FlowerHome,
    *,
    superlink: str,
    region: str,
    data_path: str | Path | None = None,
    ca_cert: str | Path | None = None,
    auth_key: str | Path | None = None,
    clientapp: str = "persistent",
    name: str | None = None,
    max_wait_time: float | None = None,
) -> SuperNode:
    """Start ``flower-supernode`` for ``region`` (node config: ``region``, ``data-path``).

    ``clientapp = "persistent"`` runs the SuperNode with ``--isolation process``
    and one long-running ClientApp process
    (:mod:`fedglobal.engines.clientapp_worker`); ``"per-message"`` keeps
    Flower's default (a fresh ``flwr-clientapp`` process per message).
    """
    if clientapp not in ("persistent", "per-message"):
        raise EngineError(f"clientapp = {clientapp!r}: choose 'persistent' or 'per-message'")
    name = name or re.sub(r"[^A-Za-z0-9_.-]+", "_", region)
    port = free_port()
    node_config: dict[str, Any] = {"region": region}
    if data_path is not None:
        node_config["data-path"] = str(Path(data_path).expanduser().resolve())
    config_path = home.root / f"node-{name}-{uuid.uuid4().hex[:8]}.toml"
    config_path.write_text(tomli_w.dumps(node_config))
    argv = [
        sys.executable,  # flower-supernode, safe against a second SIGINT while it exits
        "-m",
        "fedglobal.engines.supernode_main",
        "--superlink",
        superlink,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--node-config",
        str(config_path),
        "--isolation",
        "process" if clientapp == "persistent" else "subprocess",
    ]
    argv += ["--insecure"] if ca_cert is None else ["--root-certificates", str(ca_cert)]
    if auth_key is not None:
        argv += ["--auth-supernode-private-key", str(auth_key)]
    if max_wait_time is not None:
        argv += ["--max-wait-time", str(max_wait_time)]
    # Flower's SuperExec polls for tasks every second by default (per-message mode)
    env = {**home.env(), "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.25"}
    supernode = sup.start(f"supernode-{name}", argv, env=env)
    worker = None
    if clientapp == "persistent":
        worker = sup.start(
            f"clientapp-{name}",
            [
                sys.executable,
                "-m",
                "fedglobal.engines.clientapp_worker",
                "--runtime-api-address",
                f"127.0.0.1:{port}",
                "--parent-pid",
                str(supernode.pid),
                "--preload",
                CLIENT_APP,
            ],
            env=env,
        )
    return SuperNode(
        region=region,
        supernode=supernode,
        port=port,
        clientapp=worker,
        data_path=node_config.get("data-path"),
    )


# -- runs ------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """How a submitted run ended."""

    run_id: int | None
    status: str
    details: str = ""
    output: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "finished:completed"

    def error_lines(self) -> list[str]:
        """The lines of the run's log that report an exception."""
        return [line.strip() for line in self.output if _ERROR_LINE.search(line)]

    def describe(self) -> str:
        errors = self.error_lines()
        why = errors[-1] if errors else (self.details or "see the log above")
        return f"run {self.run_id} ended {self.status}: {why}"


def run_config_for(
    experiment_toml: str,
    *,
    base_dir: str,
    run_dir: str | Path,
    engine: str,
    expected_nodes: int = 0,
    quiet: bool = False,
) -> dict[str, Any]:
    """The ServerApp's run_config (``[tool.flwr.app.config]`` keys)."""
    return {
        "experiment-toml": experiment_toml,
        "base-dir": str(base_dir),
        "run-dir": str(Path(run_dir).resolve()),
        "quiet": bool(quiet),
        "engine": engine,
        "expected-nodes": int(expected_nodes),
    }


def _federation_config_arg(values: Mapping[str, Any]) -> str:
    parts = []
    for key, value in values.items():
        text = tomli_w.dumps({"v": value}).strip()[len("v = ") :]
        parts.append(f"{key}={text}")
    return " ".join(parts)


def submit_run(
    sup: Supervisor,
    home: FlowerHome,
    run_config: Mapping[str, Any],
    *,
    timeout: float,
    federation_config: Mapping[str, Any] | None = None,
    quiet: bool = False,
    out: TextIO | None = None,
    superlink: SuperLink | None = None,
) -> RunOutcome:
    """``flwr run`` the app with ``run_config``; stream its log until the run ends.

    Lines are echoed to ``out`` (default stderr) unless ``quiet``; Flower's,
    Ray's and TensorFlow's start-up chatter is left out. If the run has not
    ended after ``timeout`` seconds it is stopped (``flwr stop``) and
    :class:`EngineError` is raised. If ``superlink`` (a local one) exits
    meanwhile, :class:`EngineError` names it at once (:func:`superlink_lost`).
    """
    out = out or sys.stderr
    rc_path = home.root / f"run-config-{uuid.uuid4().hex[:8]}.toml"
    rc_path.write_text(tomli_w.dumps(dict(run_config)))
    argv = [
        executable("flwr"),
        "run",
        str(home.app_dir),
        CONNECTION,
        "--run-config",
        str(rc_path),
        "--stream",
    ]
    if federation_config:
        argv += ["--federation-config", _federation_config_arg(federation_config)]
    proc = sup.start("flwr-run", argv, env=home.env(), capture=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=pump, name="flwr-run-output", daemon=True)
    reader.start()
    output: list[str] = []
    run_id: int | None = None
    deadline = time.monotonic() + timeout
    finished = False
    try:
        while not finished:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                line = ""
            if line is None:
                finished = True
                continue
            if line:
                output.append(line)
                match = _RUN_ID.search(line)
                if match and run_id is None:
                    run_id = int(match.group(1))
                if not quiet and (verbose_console() or not _NOISE.search(line)):
                    out.write(line)
                    out.flush()
            if superlink is not None and not superlink.process.running():
                sup.stop(proc)
                raise EngineError(superlink_lost(superlink, run_id))
            if time.monotonic() > deadline:
                if run_id is not None:
                    flwr(sup, home, "stop", str(run_id), CONNECTION, timeout=30)
                sup.stop(proc)
                raise EngineError(
                    f"run {run_id} did not finish within {timeout:g}s; stopped it. "
                    f"Last lines:\n{''.join(output[-20:])}"
                )
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: the run must not go on without us
        if run_id is not None:
            flwr(sup, home, "stop", str(run_id), CONNECTION, timeout=30)
        raise
    proc.popen.wait(timeout=30)
    reader.join(timeout=5)
    if superlink is not None and not superlink.process.running():
        raise EngineError(superlink_lost(superlink, run_id))
    if run_id is None:
        return RunOutcome(None, "not-started", "".join(output[-20:]), output)
    status, details = run_status(sup, home, run_id)
    return RunOutcome(run_id, status, details, output)


def superlink_lost(superlink: SuperLink, run_id: int | None) -> str:
    """The error when a local SuperLink exits during a run."""
    run = f"run {run_id}" if run_id is not None else "the run's submission"
    return (
        f"the SuperLink ({superlink.url}, pid {superlink.process.pid}) exited with code "
        f"{superlink.process.returncode} during {run}; the run is lost: Flower 1.41 keeps "
        "runs and SuperNode registrations in the SuperLink's memory, so a restarted SuperLink "
        "refuses the old SuperNodes and they exit (start them again). "
        f"Its log {superlink.process.log_path} ends with:\n{superlink.process.log_tail(15)}"
    )


def run_status(sup: Supervisor, home: FlowerHome, run_id: int) -> tuple[str, str]:
    """(status, details) of a run, e.g. ``("finished:completed", "")``."""
    code, output = flwr(
        sup, home, "ls", CONNECTION, "--run-id", str(run_id), "--format", "json", timeout=60
    )
    if "connection to the superlink is unavailable" in output.lower():  # exit code 0 with json
        raise EngineError(
            f"the SuperLink at {home.address} cannot be reached after run {run_id}'s log "
            "stream ended: it stopped, was restarted (which loses the run: Flower 1.41 keeps "
            "runs in its memory) or the network failed. `flwr ls` said: "
            f"{' '.join(output.split())[-400:]}"
        )
    if code != 0:
        raise EngineError(f"`flwr ls --run-id {run_id}` failed: {output[-800:]}")
    answer = _json_tail(output)
    runs = answer.get("runs", [])
    if answer.get("success") is False:
        raise EngineError(f"`flwr ls --run-id {run_id}` failed: {answer.get('error-message')}")
    if not runs:
        raise EngineError(f"the SuperLink does not know run {run_id}")
    return str(runs[0].get("status", "")), str(runs[0].get("status-details", ""))
