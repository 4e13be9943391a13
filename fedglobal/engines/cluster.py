"""The ``cluster`` engine: the in-process engine's Grid, its workers Ray actors.

The fast path of one machine, carried onto a Ray cluster. The ServerApp runs in
this process against :class:`~fedglobal.engines.inprocess.InProcessGrid`, as on
the ``inprocess`` engine; each delivery (a round's train or evaluate messages)
is shared out over Ray actors (:class:`RayPool`), placed across the cluster's
nodes (``SPREAD``), and each actor trains its share as one cohort
(``clients.cohort:run_cohort``), exactly as a worker process of
:class:`~fedglobal.engines.pool.WorkerPool` does: the same shares (largest
regions first to the least loaded worker, a region with client state back to
the actor holding it), the same messages serialized as Flower's protobuf.

- ``[engine] ray_address`` (else ``$RAY_ADDRESS``): attach to that running
  cluster, as a driver, and leave it running. Without one, a private local Ray
  is started by ``ray.init`` and stopped by ``ray.shutdown`` (its own handle).
- Workers: ``experiment.workers`` of them, else one per ``[engine] client_cpus``
  CPUs of the cluster; each actor reserves ``client_cpus`` CPUs (and
  ``client_gpus``) and runs TensorFlow with that many threads. On a local Ray
  this process is worker 0, as on the ``inprocess`` engine's pool, and
  ``workers - 1`` actors are started: one machine's CPUs then import
  TensorFlow one time fewer (docs/engines.md has the figures).
- The actors find fedglobal on this process's ``sys.path``, sent with the job
  (Ray's job config), so no runtime environment has to be built for them.
- The actors start (each imports TensorFlow) while this process imports its own.
- An actor that dies, or does not reply within ``experiment.round_timeout``, is
  killed (``ray.kill``) and replaced; its regions get error replies naming it,
  as a worker process's do.
- Every node needs the same environment (fedglobal importable at the same path;
  actors get this process's ``sys.path``) and the data at the same path, or its
  regions' partitions (``parquet:DIR``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Error, Message
from flwr.common.constant import ErrorCode

from fedglobal.config import ExperimentConfig
from fedglobal.data.regions import region_sizes
from fedglobal.engines import CLIENT_APP, COHORT, SERVER_APP, load_component
from fedglobal.engines.inprocess import InProcessGrid, run_id_for, run_server_app
from fedglobal.engines.pool import (
    MIRRORED_ENV,
    LocalNodes,
    balanced_shares,
    deliver_locally,
    from_bytes,
    set_threads,
    to_bytes,
)
from fedglobal.engines.ray import driver_env, ray_address
from fedglobal.errors import EngineError

log = logging.getLogger(__name__)

#: A local Ray passes a delivery (a list of serialized messages) of up to this size
#: inside the call, not through its object store (Ray's default: 100 KiB). Measured
#: on the quickstart's 11-message deliveries of 20 KB: 4.7 ms a round trip -> 1.6 ms.
INLINE_BYTES = 4 * 1024 * 1024

__all__ = ["INLINE_BYTES", "ClusterGrid", "ClusterWorker", "RayPool", "ray_session", "run_cluster"]


class ClusterWorker:
    """A Ray actor serving regions: the ClientApp and its cohort entry, loaded once.

    The actor counterpart of a :class:`~fedglobal.engines.pool.WorkerPool` worker
    process; it keeps its regions' Contexts (client state) between deliveries.
    """

    def __init__(self, client_ref: str, cohort_ref: str | None, run_id: int, threads: int) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from fedglobal.engines import load_component
        from fedglobal.engines.pool import LocalNodes, set_threads

        set_threads(threads)
        self._nodes = LocalNodes(
            load_component(client_ref),
            load_component(cohort_ref) if cohort_ref else None,
            run_id=run_id,
        )

    def ready(self) -> int:
        return os.getpid()

    def deliver(
        self, messages: list[bytes], regions: list[str], env: Mapping[str, str | None]
    ) -> tuple[list[bytes], list[int]]:
        """Replies (serialized) to ``messages``, and the nodes now holding state."""
        from fedglobal.engines.pool import apply_env

        apply_env(env)
        replies = self._nodes.deliver([from_bytes(b) for b in messages], regions)
        return [to_bytes(r) for r in replies], self._nodes.stateful()


def _error_reply(message: Message, reason: str) -> Message:
    return Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason=reason), reply_to=message)


class RayPool:
    """``workers`` :class:`ClusterWorker` actors sharing out each delivery's regions.

    The interface of :class:`~fedglobal.engines.pool.WorkerPool` that
    :class:`~fedglobal.engines.inprocess.InProcessGrid` uses (``deliver``,
    ``shares``, ``costs``); Ray must be initialised (:func:`ray_session`). With
    ``in_process``, worker 0 is this process (the :class:`LocalNodes` given to
    :meth:`serve_locally`) and ``workers - 1`` actors are started.
    """

    def __init__(
        self,
        workers: int,
        client_ref: str,
        cohort_ref: str | None,
        *,
        run_id: int,
        cpus: int = 1,
        gpus: float = 0.0,
        start_timeout: float = 300.0,
        wait: bool = True,
        in_process: bool = False,
    ) -> None:
        import ray

        actors = workers - 1 if in_process else workers
        if actors < 1:
            raise ValueError(
                f"a Ray pool needs at least one actor, got {workers} worker(s)"
                + (" with this process as one" if in_process else "")
            )
        self.workers = workers
        self._offset = 1 if in_process else 0
        self._local: LocalNodes | None = None
        self.costs: dict[str, float] = {}
        #: Actors replaced after they died or hung: dicts with worker, reason.
        self.replaced: list[dict[str, Any]] = []
        self._home: dict[int, int] = {}
        self._args = (client_ref, cohort_ref, run_id, max(1, int(cpus)))
        self._cls = ray.remote(num_cpus=cpus, num_gpus=gpus, max_restarts=0)(ClusterWorker)
        self._actors = [self._start() for _ in range(actors)]
        self._closed = False
        self._cpus, self._start_timeout = cpus, start_timeout
        self._ready = [a.ready.remote() for a in self._actors]
        self.pids: list[int] | None = None
        if wait:
            self.wait_ready()

    def wait_ready(self) -> list[int]:
        """Wait until every actor has loaded the ClientApp (raises EngineError if one
        does not within ``start_timeout``); returns their process ids.

        With ``wait = False`` the actors start while this process does something else
        (the cluster engine imports the ServerApp meanwhile), then this is called.
        """
        import ray

        if self.pids is None:
            from ray.exceptions import GetTimeoutError

            try:
                self.pids = ray.get(self._ready, timeout=self._start_timeout)
            except GetTimeoutError:
                self.close()
                raise EngineError(
                    f"the cluster engine's {len(self._actors)} Ray actor(s) "
                    f"({self._cpus} CPU each) did not start within {self._start_timeout:g}s "
                    "(engine.connect_timeout); check the cluster's free CPUs (`ray status`) "
                    "or lower experiment.workers / engine.client_cpus"
                ) from None
            except Exception as exc:
                self.close()
                raise EngineError(
                    f"a Ray actor of the cluster engine failed to start: {exc}; every node "
                    "needs fedglobal and the ClientApp importable (docs/engines.md)"
                ) from None
        return self.pids

    def _start(self) -> Any:
        return self._cls.options(scheduling_strategy="SPREAD").remote(*self._args)

    def serve_locally(self, nodes: LocalNodes) -> None:
        """This process's nodes, which serve worker 0's regions (``in_process``)."""
        if not self._offset:
            raise EngineError("this Ray pool was not created with in_process=True")
        self._local = nodes

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def shares(self, items: Sequence[tuple[int, str, Message]]) -> dict[int, list[int]]:
        """``{worker: positions in items}`` (:func:`~fedglobal.engines.pool.balanced_shares`)."""
        return balanced_shares(items, self.workers, self._home, self.costs)

    def _replace(self, actor: int, reason: str) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self._actors[actor], no_restart=True)
        self._actors[actor] = self._start()
        slot = actor + self._offset
        self._home = {node: w for node, w in self._home.items() if w != slot}  # state gone
        self.replaced.append({"worker": actor, "reason": reason})
        log.warning("Ray actor %d %s; replaced", actor, reason)

    def deliver(
        self, items: Sequence[tuple[int, str, Message]], *, timeout: float | None = None
    ) -> list[Message]:
        """Replies to ``(region index, region, message)`` items, in their order; every
        actor's share runs at once, and meanwhile this process's (``in_process``), which
        cannot be interrupted. An actor that fails or exceeds ``timeout`` is replaced
        and its messages get error replies naming the region."""
        import ray
        from ray.exceptions import GetTimeoutError, RayError

        if self._closed:
            raise EngineError("the Ray pool is closed")
        if self._offset and self._local is None:
            raise EngineError("serve_locally() was not called before deliver()")
        env = {key: os.environ.get(key) for key in MIRRORED_ENV}
        shares = self.shares(items)
        remote = {w: p for w, p in shares.items() if w >= self._offset}
        refs = {
            w: self._actors[w - self._offset].deliver.remote(
                [to_bytes(items[i][2]) for i in positions],
                [items[i][1] for i in positions],
                env,
            )
            for w, positions in remote.items()
        }
        deadline = None if timeout is None else time.monotonic() + timeout
        out: list[Message | None] = [None] * len(items)
        if self._local is not None and 0 in shares:  # meanwhile, this process's share
            deliver_locally(self._local, items, shares[0], out, self._home)
        for worker, positions in remote.items():
            actor = worker - self._offset
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                replies, stateful = ray.get(refs[worker], timeout=left)
            except (GetTimeoutError, RayError) as exc:
                hung = isinstance(exc, GetTimeoutError)
                what = f"no reply within {timeout:g}s" if hung else f"failed: {exc}"
                self._replace(actor, "hung" if hung else "died")
                for i in positions:
                    _, region, message = items[i]
                    out[i] = _error_reply(message, f"region {region}: Ray actor {actor} {what}")
                continue
            for i, data in zip(positions, replies, strict=True):
                out[i] = from_bytes(data)
            self._home.update(dict.fromkeys(stateful, worker))
        return [m for m in out if m is not None]

    def close(self) -> None:
        """Kill every actor (``ray.kill``, by handle)."""
        import ray

        if self._closed:
            return
        self._closed = True
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)


class ClusterGrid(InProcessGrid):
    """:class:`~fedglobal.engines.inprocess.InProcessGrid` whose nodes live in Ray actors,
    possibly on other machines (and, on a local Ray, in this process too): checkpoints
    do not collect their client state."""

    clients_are_local = False


@contextlib.contextmanager
def ray_session(cfg: ExperimentConfig) -> Iterator[str | None]:
    """Ray, initialised in this process for the run: attached to ``ray_address(cfg)``
    (left running afterwards), or a private local Ray, stopped at the end. Yields the
    address attached to (None: local)."""
    import ray

    if ray.is_initialized():
        raise EngineError(
            "Ray is already initialised in this process; the cluster engine starts or attaches "
            "to Ray itself: call ray.shutdown() first, or use [engine] ray_address"
        )
    from ray.job_config import JobConfig

    address = ray_address(cfg)
    kwargs: dict[str, Any] = {
        # The actors' sys.path gains this process's, as Ray adds a driver's script
        # directory (a runtime_env with PYTHONPATH cost 0.6 s more per actor start).
        "job_config": JobConfig(_py_driver_sys_path=[p for p in sys.path if p]),
        "include_dashboard": False,
        "log_to_driver": False,
    }
    if address:
        with _driver_environment(address):
            ray.init(address=address, **kwargs)
    else:
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 1,
            _system_config={"max_direct_call_object_size": INLINE_BYTES},
            **kwargs,
        )
    try:
        yield address
    finally:
        ray.shutdown()  # attached: disconnects; local: stops the Ray it started


@contextlib.contextmanager
def _driver_environment(address: str) -> Iterator[None]:
    """:func:`~fedglobal.engines.ray.driver_env` for ``ray.init`` in this process.

    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is read when Ray is imported, so for a
    loopback address Ray's switch (``ray_constants.ENABLE_RAY_CLUSTER``) is also
    set for the connection, and put back (pinned by
    tests/engines/test_engine_cluster.py)."""
    from ray._private import ray_constants

    env = driver_env(address)
    loopback = env.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0"
    saved = ray_constants.ENABLE_RAY_CLUSTER
    if loopback:
        ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _workers(cfg: ExperimentConfig) -> int:
    import ray

    if cfg.experiment.workers >= 1:
        return cfg.experiment.workers
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(1, int(cpus // max(1, cfg.engine.client_cpus)))


def run_cluster(
    cfg: ExperimentConfig, regions: Sequence[str], run_dir: Path, *, quiet: bool = False
) -> None:
    """Run the ServerApp in this process against a :class:`ClusterGrid` of Ray actors."""
    run_id = run_id_for(cfg)
    cohort_ref = COHORT if cfg.client.cohort else None
    with ray_session(cfg) as address:
        workers = _workers(cfg)
        in_process = address is None and workers > 1  # one machine: this process is worker 0
        if not quiet:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            actors = (
                f"{workers - 1} Ray actor(s) and this process"
                if in_process
                else (f"{workers} Ray actor(s)")
            )
            print(f"cluster engine: {actors} on {where}", file=sys.stderr)
        threads = max(1, int(cfg.engine.client_cpus))
        with RayPool(
            workers,
            CLIENT_APP,
            cohort_ref,
            run_id=run_id,
            cpus=cfg.engine.client_cpus,
            gpus=cfg.engine.client_gpus,
            start_timeout=cfg.engine.connect_timeout,
            wait=False,
            in_process=in_process,
        ) as pool:
            # The actors import TensorFlow and the ClientApp while this process imports
            # its own (the ClientApp brings TensorFlow, which the ServerApp needs too):
            # the start-ups overlap.
            if in_process:
                set_threads(threads)
            client_app = load_component(CLIENT_APP)
            if in_process:
                local = LocalNodes(
                    client_app, load_component(cohort_ref) if cohort_ref else None, run_id=run_id
                )
                local.warn_after = cfg.experiment.round_timeout
                pool.serve_locally(local)
            load_component(SERVER_APP)
            pool.wait_ready()
            pool.costs = {r: float(n) for r, n in region_sizes(cfg).items()}  # work ~ rows
            grid = ClusterGrid(
                None,
                regions,
                run_id=run_id,
                pool=pool,  # type: ignore[arg-type]  # WorkerPool's interface
                reply_timeout=cfg.experiment.round_timeout,
            )
            run_server_app(cfg, grid, run_id=run_id, run_dir=run_dir, quiet=quiet, engine="cluster")
