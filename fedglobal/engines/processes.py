"""Processes and ports for the Ray and deployment engines (DESIGN decision 10).

Every process an engine starts goes through a :class:`Supervisor`:

- it runs in its own session (its own process group), with stdin closed and its
  output in a log file the error messages quote;
- its environment carries the supervisor's token (``FEDGLOBAL_OWNER=<token>``).
  Flower's own children (SuperExec, ``flwr-serverapp``, ``flwr-simulation``,
  ``flwr-clientapp``) and Ray's (GCS, raylet, workers) inherit it, so the
  supervisor finds them by token even after they detached into a session of
  their own or were re-parented when their parent died;
- it is stopped by pid: SIGTERM to its process group and to every descendant,
  then SIGKILL after a grace period, then a sweep of every process that still
  carries the token. ``stop_all`` runs on leaving the ``with`` block, on error,
  and at interpreter exit (``atexit``);
- if this process is killed outright (SIGKILL: no ``finally``, no ``atexit``),
  Linux sends SIGTERM to each process it started (``PR_SET_PDEATHSIG``); Flower's
  and fedglobal's own children watch their parent's pid and follow.

Ports come from the OS (:func:`free_port`), never from constants.
Linux only: processes are read from ``/proc``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from fedglobal.errors import EngineError

OWNER_ENV = "FEDGLOBAL_OWNER"

#: Environment every managed process gets unless the caller overrides it.
QUIET_ENV = {
    "FLWR_DISABLE_UPDATE_CHECK": "1",  # no network call at start-up
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",  # never `uv sync` per run
    "PYTHONUNBUFFERED": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0",
    "RAY_DEDUP_LOGS": "0",
}


_PR_SET_PDEATHSIG = 1


def _pdeathsig_setter() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, before any fork
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_pdeathsig


#: ``preexec_fn`` for every managed process (None where prctl is unavailable).
DIE_WITH_PARENT = _pdeathsig_setter() if sys.platform.startswith("linux") else None


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS reports free on ``host`` (bind to port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def executable(name: str) -> str:
    """The console script ``name`` of this interpreter's environment (else from PATH)."""
    local = Path(sys.executable).with_name(name)
    if local.is_file():
        return str(local)
    from shutil import which

    found = which(name)
    if found is None:
        raise EngineError(f"{name!r} not found next to {sys.executable} nor on PATH")
    return found


# -- /proc -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcInfo:
    """One line of the process table."""

    pid: int
    ppid: int
    state: str
    name: str


def _stat(pid: int) -> ProcInfo | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # "pid (comm) state ppid ..."; comm may itself hold spaces and parentheses
    head, _, tail = text.rpartition(")")
    fields = tail.split()
    if len(fields) < 2:
        return None
    return ProcInfo(pid=pid, ppid=int(fields[1]), state=fields[0], name=head.partition("(")[2])


def process_table() -> dict[int, ProcInfo]:
    """Every visible process, by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                table[info.pid] = info
    return table


def is_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    info = _stat(pid)
    return info is not None and info.state not in ("Z", "X")


def descendants(pid: int, table: Mapping[int, ProcInfo] | None = None) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...), parents first."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop(0)
        if table[child].state not in ("Z", "X"):
            out.append(child)
        todo.extend(children.get(child, []))
    return out


def owned_by(token: str) -> list[int]:
    """Live processes whose environment carries ``FEDGLOBAL_OWNER=<token>``."""
    marker = f"{OWNER_ENV}={token}".encode()
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
    return sorted(found)


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive at the deadline."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while pending:
        pending = [p for p in pending if is_alive(p)]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return pending


# -- managed processes -----------------------------------------------------------------


class ManagedProcess:
    """A process started by a :class:`Supervisor` (its own session, logged, tokened)."""

    def __init__(
        self, name: str, argv: Sequence[str], popen: subprocess.Popen, log_path: Path | None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stdout(self) -> IO[str] | None:
        return self.popen.stdout

    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def log_tail(self, lines: int = 25) -> str:
        """The last lines of the process's log (for error messages)."""
        if self.log_path is None or not self.log_path.is_file():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def log_contains(self, text: str) -> bool:
        """True once ``text`` appears in the process's log."""
        if self.log_path is None or not self.log_path.is_file():
            return False
        return text in self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the process and everything under it, now (used to simulate a crash)."""
        if not self.running():
            return
        tree = [self.pid, *descendants(self.pid)]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        _signal(tree, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)

    def __repr__(self) -> str:
        return f"ManagedProcess({self.name!r}, pid={self.pid}, running={self.running()})"


class Supervisor:
    """Starts processes and guarantees they are all stopped (see the module docstring).

    Use it as a context manager::

        with Supervisor(log_dir=tmp) as sup:
            link = sup.start("superlink", ["flower-superlink", ...])
            ...
        # every process started above, and everything they started, is gone
    """

    def __init__(self, *, log_dir: str | Path | None = None, token: str | None = None) -> None:
        self.token = token or uuid.uuid4().hex
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.processes: list[ManagedProcess] = []
        self._closed = False
        self._atexit_registered = False

    # ---- environment -------------------------------------------------------------------

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """This process's environment + quiet defaults + ``extra`` + the owner token."""
        env = dict(os.environ)
        # Flower starts its helpers (flower-superexec, flwr-clientapp...) from PATH
        scripts = str(Path(sys.executable).parent)
        if scripts not in env.get("PATH", "").split(os.pathsep):
            env["PATH"] = os.pathsep.join(filter(None, [scripts, env.get("PATH")]))
        for key, value in QUIET_ENV.items():
            env.setdefault(key, value)
        env.update(extra or {})
        env[OWNER_ENV] = self.token
        return env

    # ---- start / stop ------------------------------------------------------------------

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        capture: bool = False,
    ) -> ManagedProcess:
        """Start ``argv`` in its own session; output to ``<log_dir>/<name>.log`` or a pipe."""
        if self._closed:
            raise EngineError("this supervisor has already stopped its processes")
        if not self._atexit_registered:
            atexit.register(self.stop_all)
            self._atexit_registered = True
        log_path = None
        if capture:
            stdout: Any = subprocess.PIPE
        elif self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{name}.log"
            stdout = log_path.open("ab")
        else:
            stdout = subprocess.DEVNULL
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                env=self.env(env),
                cwd=cwd,
                start_new_session=True,
                preexec_fn=DIE_WITH_PARENT,  # one prctl call, resolved before the fork
                text=capture,
                bufsize=1 if capture else -1,
            )
        except OSError as exc:
            raise EngineError(f"cannot start {name} ({argv[0]}): {exc}") from exc
        finally:
            if not capture and log_path is not None:
                stdout.close()
        proc = ManagedProcess(name, argv, popen, log_path)
        self.processes.append(proc)
        return proc

    def stop(self, proc: ManagedProcess, timeout: float = 10.0) -> None:
        """Stop one process and everything it started: SIGTERM, then SIGKILL after ``timeout``."""
        self._stop([proc], timeout)

    def _stop(self, procs: Sequence[ManagedProcess], timeout: float) -> None:
        """SIGTERM every process group and descendant at once; SIGKILL what outlives ``timeout``."""
        for proc in procs:
            if proc in self.processes:
                self.processes.remove(proc)
        # an exited (reaped) process's pid may be reused: only running ones are signalled
        running = [p for p in procs if p.running()]
        children = {p.pid: descendants(p.pid) for p in running}
        deadline = time.monotonic() + timeout
        for proc in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
            _signal(children[proc.pid], signal.SIGTERM)
        for proc in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        every_child = [pid for pids in children.values() for pid in pids]
        survivors = _wait_gone(every_child, timeout=max(0.0, deadline - time.monotonic()))
        stubborn = [p for p in running if p.running()]
        if stubborn or survivors:
            for proc in stubborn:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            _signal([*(p.pid for p in stubborn), *survivors], signal.SIGKILL)
            for proc in stubborn:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=5)
            _wait_gone(survivors, timeout=5)
        for proc in procs:
            self._close(proc)

    @staticmethod
    def _close(proc: ManagedProcess) -> None:
        if proc.popen.stdout is not None:
            with contextlib.suppress(OSError):
                proc.popen.stdout.close()

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every started process (all at once), then sweep what carries the token."""
        try:
            self._stop(list(self.processes), timeout)
            stray = owned_by(self.token)
            if stray:
                _signal(stray, signal.SIGTERM)
                stray = _wait_gone(stray, timeout=3.0)
                _signal(stray, signal.SIGKILL)
                _wait_gone(stray, timeout=5.0)
        finally:
            self._closed = True
            if self._atexit_registered:
                atexit.unregister(self.stop_all)
                self._atexit_registered = False

    def leftovers(self) -> list[int]:
        """Live processes still carrying this supervisor's token (should be none)."""
        return owned_by(self.token)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop_all()


# -- waiting ---------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    watch: Sequence[ManagedProcess] = (),
    interval: float = 0.1,
) -> None:
    """Poll ``predicate`` until true; fail if ``timeout`` passes or a watched process exits."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        for proc in watch:
            if not proc.running():
                raise EngineError(
                    f"{proc.name} exited with code {proc.returncode} while waiting for {what}"
                    + (f"; its log ends with:\n{proc.log_tail()}" if proc.log_tail() else "")
                )
        if time.monotonic() > deadline:
            raise EngineError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def http_ok(url: str, *, cafile: str | Path | None = None, timeout: float = 2.0) -> bool:
    """True if ``url`` answers 2xx (HTTPS verified against ``cafile`` when given)."""
    context = None
    if url.startswith("https://"):
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
