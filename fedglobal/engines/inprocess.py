"""The in-process engine: a Flower Grid that hands each Message to the ClientApp.

No Ray, no detached SuperLink, no per-run dependency sync: the ServerApp and the
ClientApp are Flower's own objects, called in this process or in a pool of
worker processes (``experiment.workers``, :mod:`fedglobal.engines.pool`). Each
region is a node with its own ``Context`` (node config ``region``, persistent
``state``), as on a SuperNode. A ClientApp exception becomes an error reply, as
it does in Flower's runtimes. A worker process that dies or does not reply
within ``experiment.round_timeout`` is killed by its pid and replaced, and its
regions get error replies; a region served by this process (every region when
``workers <= 1``) runs in the server's thread and cannot be interrupted
(docs/faults.md). With ``[client] cohort``, the train messages of a
round go together to the ClientApp's batched entry point
(``clients.cohort:train_cohort``), which replies as the per-message handler
would; the strategy and the ClientApp are the same either way.

Flower 1.41 only builds a ``Message`` once its task identity (run, node, task)
is set. Flower's runtimes set it; this engine sets it for the ServerApp's task
(``TaskIdentity`` is a Flower internal: tests/test_flower_contract.py pins it).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedglobal.config import ExperimentConfig
from fedglobal.data.regions import region_sizes
from fedglobal.engines import CLIENT_APP, COHORT, SERVER_APP, load_component
from fedglobal.engines.pool import LocalNodes, WorkerPool, set_threads

log = logging.getLogger(__name__)

NODE_ID_OFFSET = 1000


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process (or its worker pool).

    Args:
        client_app: the ClientApp callable.
        regions: one node per region, in order (node id ``1000 + index``).
        run_id: the run's id.
        cohort: the batched train entry (``clients.cohort:train_cohort``) or None:
            all train messages pulled together are handed to it at once.
        pool: a :class:`~fedglobal.engines.pool.WorkerPool`, which shares each
            delivery out over its workers (a region with client state stays with the
            worker holding it). None: this process serves every region.
        reply_timeout: seconds a worker process has to reply to a batch before it
            is killed and replaced, its regions getting error replies
            (``experiment.round_timeout``); regions served by this process cannot
            be interrupted (a warning is logged after this long). None: no limit.
    """

    #: The nodes run on this machine, under the ServerApp's control: checkpoints
    #: may collect their ClientApp state without it leaving the machine.
    clients_are_local = True

    def __init__(
        self,
        client_app: Any,
        regions: Sequence[str],
        *,
        run_id: int,
        cohort: Callable | None = None,
        pool: WorkerPool | None = None,
        reply_timeout: float | None = None,
    ) -> None:
        self._run = Run.create_empty(run_id=run_id)
        self._regions = {NODE_ID_OFFSET + i: str(region) for i, region in enumerate(regions)}
        self._nodes = LocalNodes(client_app, cohort, run_id=run_id)
        self._nodes.warn_after = reply_timeout
        self._reply_timeout = reply_timeout
        self._pool = pool
        self._pending: dict[str, Message] = {}
        self._ids = itertools.count(1)
        self.delivered = 0

    @property
    def _contexts(self) -> dict[int, Context]:
        """Contexts of the nodes served in this process (created on first message)."""
        return self._nodes.contexts

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self,
        content: RecordDict,
        message_type: str,
        dst_node_id: int,
        group_id: str,
        ttl: float | None = None,
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._regions)

    def region_of(self, node_id: int) -> str:
        return self._regions[node_id]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            if message.metadata.dst_node_id not in self._regions:
                raise ValueError(f"message for unknown node {message.metadata.dst_node_id}")
            message_id = f"m{next(self._ids)}"
            message.metadata.__dict__["_message_id"] = message_id
            self._pending[message_id] = message
            ids.append(message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Deliver every pending message asked for, all at once (a cohort per round)."""
        messages = [self._pending.pop(i) for i in message_ids if i in self._pending]
        if not messages:
            return []
        regions = [self._regions[m.metadata.dst_node_id] for m in messages]
        if self._pool is None:
            replies = self._nodes.deliver(messages, regions)
        else:
            replies = self._pool.deliver(
                [
                    (m.metadata.dst_node_id - NODE_ID_OFFSET, r, m)
                    for m, r in zip(messages, regions, strict=True)
                ],
                timeout=self._reply_timeout,
            )
        for reply in replies:
            reply.metadata.__dict__["_message_id"] = f"r{next(self._ids)}"
        self.delivered += len(replies)
        return replies

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return list(self.pull_messages(list(self.push_messages(messages))))


def run_inprocess(
    cfg: ExperimentConfig, regions: Sequence[str], run_dir: Path, *, quiet: bool = False
) -> None:
    """Run the ServerApp against an InProcessGrid with one node per region.

    ``[client] cohort`` hands each round's train and evaluate messages to the
    batched entry point ``clients.cohort:run_cohort``. ``experiment.workers = N``
    (N > 1) trains in N processes, this one and N - 1 workers started first
    (:mod:`fedglobal.engines.pool`), each stage's regions shared out evenly. A script
    that sets it must guard its top level with
    ``if __name__ == "__main__":`` (workers are started with the *spawn* method).
    """
    run_id = run_id_for(cfg)
    cohort_ref = COHORT if cfg.client.cohort else None
    workers = cfg.experiment.workers
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1:  # this process is worker 0; workers - 1 others are started first
            pool = WorkerPool(workers, CLIENT_APP, cohort_ref, run_id=run_id, in_process=True)
            stack.enter_context(pool)
            pool.costs = {r: float(n) for r, n in region_sizes(cfg).items()}  # work ~ rows
            set_threads(pool.threads)
            client_app = load_component(CLIENT_APP)
            cohort = load_component(cohort_ref) if cohort_ref else None
            local = LocalNodes(client_app, cohort, run_id=run_id)
            local.warn_after = cfg.experiment.round_timeout
            pool.serve_locally(local)
        else:
            client_app = load_component(CLIENT_APP)
            cohort = load_component(cohort_ref) if cohort_ref else None
        grid = InProcessGrid(
            client_app,
            regions,
            run_id=run_id,
            cohort=cohort,
            pool=pool,
            reply_timeout=cfg.experiment.round_timeout,
        )
        run_server_app(cfg, grid, run_id=run_id, run_dir=run_dir, quiet=quiet, engine="inprocess")


def run_id_for(cfg: ExperimentConfig) -> int:
    """The run id of an experiment on fedglobal's own Grids (stable in name and seed)."""
    return zlib.crc32(f"{cfg.experiment.name}:{cfg.experiment.seed}".encode()) or 1


def run_server_app(
    cfg: ExperimentConfig,
    grid: Grid,
    *,
    run_id: int,
    run_dir: Path,
    quiet: bool,
    engine: str,
) -> None:
    """Run the ServerApp against ``grid`` in this process, under the ServerApp's task
    identity (restored afterwards)."""
    server_app = load_component(SERVER_APP)
    run_config = {
        "experiment-toml": cfg.to_toml(),
        "base-dir": cfg.base_dir,
        "run-dir": str(run_dir),
        "quiet": quiet,
        "engine": engine,
    }
    context = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=run_config,
    )
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id = run_id, SUPERLINK_NODE_ID
    TaskIdentity.task_id = 1
    try:
        server_app(grid, context)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
