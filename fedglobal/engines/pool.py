"""Nodes that run the ClientApp locally: in this process, or in a pool of worker processes.

:class:`LocalNodes` holds the regions' ``Context`` objects and delivers
messages to the ClientApp callable, one by one or, for train messages when a
batched entry point is given (``clients.cohort:train_cohort``), as a cohort.
A ClientApp exception becomes an error reply, as in Flower's runtimes.

:class:`WorkerPool` runs ``workers`` processes (``multiprocessing`` *spawn*
context), each with its own :class:`LocalNodes`, its own TensorFlow thread
pools (``intra_op`` = cores / workers, ``inter_op`` = 1, set before any
TensorFlow work, so workers do not oversubscribe the cores) and its own
per-process caches (compiled models, region data). Each delivery is shared out
evenly: largest region first (by :attr:`WorkerPool.costs`, its rows), each goes to
the least loaded worker, unless its ``Context.state``
holds something (local layers, error-feedback residuals): then it is pinned to
the worker that holds that state. A region's results do not depend on the
process that trains it (its randomness comes from (seed, round, region)); a
fixed region-to-worker map left one worker with up to 8 of 10 sampled regions
(measured on the speed benchmark). Messages cross as Flower's
serialized protobuf bytes. Every worker is stopped by its pid on every exit
path: :meth:`WorkerPool.close` (the ``with`` block, errors) and ``atexit``.
A worker that dies mid-batch, or does not reply within the delivery's
``timeout``, is killed by its pid and replaced by a fresh one; its messages
get error replies naming the region and the pid (docs/faults.md).
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flwr.app import Context, Error, Message, MessageType, RecordDict
from flwr.common.constant import ErrorCode

from fedglobal.errors import EngineError

log = logging.getLogger(__name__)

__all__ = [
    "LocalNodes",
    "WorkerPool",
    "apply_env",
    "balanced_shares",
    "deliver_locally",
    "from_bytes",
    "set_threads",
    "to_bytes",
]


def to_bytes(message: Message) -> bytes:
    """A Message as Flower's serialized protobuf."""
    from flwr.common.serde import message_to_proto

    return message_to_proto(message).SerializeToString()


def from_bytes(data: bytes) -> Message:
    """The Message serialized by :func:`to_bytes`."""
    from flwr.common.serde import message_from_proto
    from flwr.proto.message_pb2 import Message as ProtoMessage

    return message_from_proto(ProtoMessage.FromString(data))


class LocalNodes:
    """Regions' Contexts and delivery of messages to the ClientApp, in this process.

    Args:
        client_app: the ClientApp callable ``(message, context) -> reply``.
        cohort: optional batched entry ``(messages, contexts) -> replies`` for the
            train and evaluate messages delivered together (``clients.cohort:run_cohort``);
            its ``None`` entries go through ``client_app``.
        run_id: the run's id, for the Contexts.
    """

    def __init__(self, client_app: Any, cohort: Callable | None, *, run_id: int) -> None:
        self._client_app = client_app
        self._cohort = cohort
        self._run_id = run_id
        self.contexts: dict[int, Context] = {}
        #: Seconds after which a delivery still running logs a warning (it cannot be
        #: interrupted: it runs in the caller's thread); None: no warning.
        self.warn_after: float | None = None

    def context(self, node_id: int, region: str) -> Context:
        """The node's Context, created on first use (node config ``region``)."""
        ctx = self.contexts.get(node_id)
        if ctx is None:
            ctx = Context(
                run_id=self._run_id,
                node_id=node_id,
                node_config={"region": region},
                state=RecordDict(),
                run_config={},
            )
            self.contexts[node_id] = ctx
        return ctx

    def stateful(self) -> list[int]:
        """Node ids whose Context holds state (they must keep coming to this process)."""
        return [node for node, ctx in self.contexts.items() if len(ctx.state) > 0]

    def _error(self, message: Message, region: str, exc: BaseException) -> Message:
        log.warning("region %s failed: %s", region, exc)
        reason = f"region {region}: {type(exc).__name__}: {exc}"
        return Message(
            Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message
        )

    def deliver(self, messages: Sequence[Message], regions: Sequence[str]) -> list[Message]:
        """Replies to ``messages`` (addressed to nodes of ``regions``), in order.

        The ClientApp runs in the calling thread: a client that hangs cannot be
        interrupted (after :attr:`warn_after` seconds a warning says so).
        """
        if self.warn_after is None:
            return self._deliver(messages, regions)
        names = ", ".join(sorted(set(regions))[:10])
        timer = threading.Timer(
            self.warn_after,
            log.warning,
            args=(
                "regions %s: no reply after %gs (round_timeout). They run in this process's own "
                "thread, which cannot be interrupted: the run waits for them (docs/faults.md)",
                names,
                self.warn_after,
            ),
        )
        timer.daemon = True
        timer.start()
        try:
            return self._deliver(messages, regions)
        finally:
            timer.cancel()

    def _deliver(self, messages: Sequence[Message], regions: Sequence[str]) -> list[Message]:
        contexts = [
            self.context(m.metadata.dst_node_id, r) for m, r in zip(messages, regions, strict=True)
        ]
        replies: list[Message | None] = [None] * len(messages)
        kinds = (MessageType.TRAIN, MessageType.EVALUATE)
        batched = [i for i, m in enumerate(messages) if m.metadata.message_type in kinds]
        if self._cohort is not None and batched:
            try:
                batch = self._cohort([messages[i] for i in batched], [contexts[i] for i in batched])
            except Exception as exc:  # fall back to one by one
                log.warning("cohort delivery failed (%s); regions go one by one", exc)
                batch = [None] * len(batched)
            for i, reply in zip(batched, batch, strict=True):
                replies[i] = reply
        out = []
        for i, message in enumerate(messages):
            reply = replies[i]
            if reply is None:
                try:
                    reply = self._client_app(message, contexts[i])
                except Exception as exc:  # an error reply, as Flower does
                    reply = self._error(message, regions[i], exc)
            out.append(reply)
        return out


def deliver_locally(
    nodes: LocalNodes,
    items: Sequence[tuple[int, str, Message]],
    positions: Sequence[int],
    out: list[Message | None],
    home: dict[int, int],
) -> None:
    """Worker 0's share of a delivery, run by ``nodes`` in this process: the replies to
    ``items[positions]`` go to ``out`` at the same positions, and the nodes now holding
    state are noted in ``home`` as worker 0's (pools whose worker 0 is this process)."""
    replies = nodes.deliver([items[i][2] for i in positions], [items[i][1] for i in positions])
    for i, reply in zip(positions, replies, strict=True):
        out[i] = reply
    home.update(dict.fromkeys(nodes.stateful(), 0))


# -- worker processes -----------------------------------------------------------------


def set_threads(threads: int) -> None:
    """TensorFlow's intra-op threads = ``threads`` and inter-op = 1 for this process.

    Only possible before TensorFlow's runtime starts; later (e.g. in a process that
    already ran TensorFlow) it is left as it is, with a debug log line.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError as exc:
        log.debug("TensorFlow threads already fixed in this process: %s", exc)


def _worker_main(
    conn: Any, client_ref: str, cohort_ref: str | None, run_id: int, threads: int
) -> None:
    """A worker: load the apps, then answer batches of serialized messages until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us by pid
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from fedglobal.engines import load_component

    set_threads(threads)
    nodes = LocalNodes(
        load_component(client_ref),
        load_component(cohort_ref) if cohort_ref else None,
        run_id=run_id,
    )
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except EOFError:
            request = None
        if request is None:  # stop: skip the ~1 s interpreter teardown the parent would wait for
            from fedglobal.runtime.fast_exit import exit_now

            exit_now(0)
        env = request.get("env")
        if env is not None:
            apply_env(env)
        try:
            messages = [from_bytes(b) for b in request["messages"]]
            replies = nodes.deliver(messages, request["regions"])
            conn.send(("ok", ([to_bytes(r) for r in replies], nodes.stateful())))
        except BaseException as exc:  # report, keep serving
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def _error_reply(message: Message, reason: str) -> Message:
    """An error reply to ``message`` (its node did not answer)."""
    return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason=reason), reply_to=message)


def apply_env(env: Mapping[str, str | None]) -> None:
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


#: Every worker pid this process started (diagnostics and tests: all must be gone).
STARTED: list[int] = []

#: Environment variables mirrored into the workers before each batch, so that a
#: process-wide plan set after the pool started (clients.attacks) reaches them.
MIRRORED_ENV = ("FEDGLOBAL_ATTACK", "FEDGLOBAL_FAULTS")


def balanced_shares(
    items: Sequence[tuple[int, str, Message]],
    workers: int,
    home: Mapping[int, int],
    costs: Mapping[str, float],
) -> dict[int, list[int]]:
    """``{worker slot: positions in items}``. Regions whose node has a ``home`` slot
    (its Context holds state) go there; the others, largest first (``costs``, else 1
    each), to the least loaded slot, which balances the work (LPT). Ties go to the
    highest slot: slot 0 (``in_process``) is the server's own process, busy between
    deliveries too, so it gets the lighter share."""
    load = [0.0] * workers
    slot_of: list[int | None] = []
    for _, region, message in items:
        slot = home.get(message.metadata.dst_node_id)
        slot_of.append(slot)
        if slot is not None:
            load[slot] += costs.get(region, 1.0)
    free = [i for i, slot in enumerate(slot_of) if slot is None]
    free.sort(key=lambda i: -costs.get(items[i][1], 1.0))  # stable: ties in order
    for i in free:
        slot = min(range(workers), key=lambda k: (load[k], -k))
        load[slot] += costs.get(items[i][1], 1.0)
        slot_of[i] = slot
    shares: dict[int, list[int]] = {}
    for i, slot in enumerate(slot_of):
        shares.setdefault(slot, []).append(i)
    return shares


class WorkerPool:
    """``workers`` training processes sharing out each delivery's regions.

    Each delivery's items go, largest first, to the least loaded worker, except
    regions whose Context holds state, which go back to the worker holding it
    (see :meth:`shares` and the module docstring). With
    ``in_process``, worker 0 is this process (the :class:`LocalNodes` given to
    :meth:`serve_locally`), so ``workers - 1`` processes are started: on 2 cores,
    ``workers = 2`` trains in this process and one other, and pays one more
    TensorFlow start-up, not two. While the others train, this process trains
    its own share.

    Args:
        workers: number of training processes (>= 1); one per core is the usual choice.
        client_ref: component reference of the ClientApp (``clients.app:app``).
        cohort_ref: component reference of the batched entry, or None.
        run_id: the run's id (the workers' Contexts carry it).
        threads: TensorFlow intra-op threads per worker; default cores // workers.
        in_process: worker 0 is this process (see :meth:`serve_locally`).
    """

    def __init__(
        self,
        workers: int,
        client_ref: str,
        cohort_ref: str | None,
        *,
        run_id: int,
        threads: int | None = None,
        in_process: bool = False,
    ) -> None:
        if workers < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {workers}")
        self.workers = workers
        self.threads = threads or max(1, (os.cpu_count() or 1) // workers)
        self._in_process = in_process
        self._local: LocalNodes | None = None
        self._ctx = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._ready: list[bool] = []
        self._lock = threading.Lock()
        self._timeout = 0.0
        self._closed = False
        self._args = (client_ref, cohort_ref, run_id, self.threads)
        #: Workers replaced after they died or hung: dicts with pid, new_pid, reason.
        self.replaced: list[dict[str, Any]] = []
        #: node id -> worker slot holding that node's Context state
        self._home: dict[int, int] = {}
        #: region -> relative cost of its messages (e.g. its number of rows); 1 if absent
        self.costs: dict[str, float] = {}
        for _ in range(workers - (1 if in_process else 0)):
            proc, parent = self._start()
            self._procs.append(proc)
            self._conns.append(parent)
            self._ready.append(False)
        atexit.register(self.close)

    def _start(self) -> tuple[Any, Any]:
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(
            target=_worker_main, args=(child, *self._args), daemon=True, name="fedglobal-worker"
        )
        proc.start()
        STARTED.append(int(proc.pid))
        child.close()
        return proc, parent

    def _replace(self, index: int, reason: str) -> None:
        """Stop worker ``index`` by its pid (if still alive) and start a fresh one in its place.

        The new worker's regions start with empty Contexts (their local layers and
        residuals are lost), as after a SuperNode restart.
        """
        proc, conn = self._procs[index], self._conns[index]
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.join(5.0)
        conn.close()
        new, parent = self._start()
        self._procs[index], self._conns[index], self._ready[index] = new, parent, False
        slot = index + (1 if self._in_process else 0)
        self._home = {node: w for node, w in self._home.items() if w != slot}  # state gone
        self.replaced.append({"pid": proc.pid, "new_pid": new.pid, "reason": reason})
        log.warning("worker process %s %s; replaced by %s", proc.pid, reason, new.pid)

    def _reply_or_failure(self, index: int, deadline: float | None) -> tuple[str, Any]:
        """``("ok", payload)``, ``("error", text)``, or ``("failed", reason)`` for a worker
        that died or did not reply by ``deadline`` (it is then replaced)."""
        conn, proc = self._conns[index], self._procs[index]
        while True:
            wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            try:
                if conn.poll(wait):
                    return conn.recv()
            except (EOFError, OSError):
                pass  # the pipe closed: the worker died
            if not proc.is_alive() or conn.closed:
                proc.join(1.0)
                reason = f"worker process {proc.pid} died (exit code {proc.exitcode}) mid-round"
                self._replace(index, "died")
                return "failed", reason
            if deadline is not None and time.monotonic() >= deadline:
                reason = (
                    f"worker process {proc.pid} killed after no reply within {self._timeout:g}s"
                )
                self._replace(index, "hung")
                return "failed", reason

    def serve_locally(self, nodes: LocalNodes) -> None:
        """This process's nodes, which serve worker 0's regions (``in_process``)."""
        if not self._in_process:
            raise EngineError("this pool was not created with in_process=True")
        self._local = nodes

    @property
    def pids(self) -> list[int]:
        """The workers' process ids."""
        return [p.pid for p in self._procs]

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _recv(self, index: int) -> Any:
        conn, proc = self._conns[index], self._procs[index]
        while not conn.poll(0.5):
            if not proc.is_alive():
                raise EngineError(
                    f"worker process {proc.pid} exited with code {proc.exitcode} "
                    "while serving regional clients"
                )
        try:
            return conn.recv()
        except EOFError:
            raise EngineError(f"worker process {proc.pid} closed its connection") from None

    def _wait_ready(self, index: int) -> None:
        if not self._ready[index]:
            status, _ = self._recv(index)
            if status != "ready":
                raise EngineError(f"worker process {self._procs[index].pid} did not start")
            self._ready[index] = True

    def deliver(
        self, items: Sequence[tuple[int, str, Message]], *, timeout: float | None = None
    ) -> list[Message]:
        """Replies to ``(region index, region, message)`` items, in their order.

        Each worker gets its share (:meth:`shares`) at once; workers run in parallel. A worker
        process that dies, or (with ``timeout``) does not reply within
        ``timeout`` seconds of the batch being sent, is killed by its pid and
        replaced; each of its messages gets an error reply naming the region,
        the pid and what happened. This process's own share (``in_process``)
        runs in the calling thread and cannot be interrupted.
        """
        self._timeout = timeout if timeout is not None else 0.0
        if self._closed:
            raise EngineError("the worker pool is closed")
        offset = 1 if self._in_process else 0
        if self._in_process and self._local is None:
            raise EngineError("serve_locally() was not called before deliver()")
        shares = self.shares(items)
        env = {key: os.environ.get(key) for key in MIRRORED_ENV}
        out: list[Message | None] = [None] * len(items)
        with self._lock:
            remote = {w: p for w, p in shares.items() if w >= offset}
            for worker, positions in remote.items():
                index = worker - offset
                self._wait_ready(index)
                self._conns[index].send(
                    {
                        "messages": [to_bytes(items[i][2]) for i in positions],
                        "regions": [items[i][1] for i in positions],
                        "env": env,
                    }
                )
            deadline = None if timeout is None else time.monotonic() + timeout
            if self._local is not None and 0 in shares:  # meanwhile, this process's share
                deliver_locally(self._local, items, shares[0], out, self._home)
            for worker, positions in remote.items():
                index = worker - offset
                status, payload = self._reply_or_failure(index, deadline)
                if status == "failed":
                    for i in positions:
                        _, region, message = items[i]
                        out[i] = _error_reply(message, f"region {region}: {payload}")
                    continue
                if status != "ok":
                    raise EngineError(f"worker process {self._procs[index].pid}: {payload}")
                replies, stateful = payload
                for i, data in zip(positions, replies, strict=True):
                    out[i] = from_bytes(data)
                self._home.update(dict.fromkeys(stateful, worker))
        return [m for m in out if m is not None]

    def shares(self, items: Sequence[tuple[int, str, Message]]) -> dict[int, list[int]]:
        """``{worker slot: positions in items}``: :func:`balanced_shares` over this pool's
        slots, with regions holding state sent back to their worker."""
        return balanced_shares(items, self.workers, self._home, self.costs)

    def close(self, timeout: float = 10.0) -> None:
        """Stop every worker: ask, wait, then terminate and kill by pid."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for conn in self._conns:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            proc.join(timeout / max(1, len(self._procs)))
        for proc in self._procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
                proc.join(2.0)
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.join(2.0)
        for conn in self._conns:
            conn.close()
