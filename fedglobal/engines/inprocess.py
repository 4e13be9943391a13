"""The in-process engine: a Flower Grid that hands each Message to the ClientApp.

No Ray, no detached SuperLink, no per-run dependency sync: the ServerApp and the
ClientApp are Flower's own objects, called in this process. Each region is a
node with its own ``Context`` (node config ``region``, persistent ``state``),
as on a SuperNode. A ClientApp exception becomes an error reply, as it does in
Flower's runtimes.

Flower 1.41 only builds a ``Message`` once its task identity (run, node, task)
is set. Flower's runtimes set it; this engine sets it for the ServerApp's task
(``TaskIdentity`` is a Flower internal: tests/test_flower_contract.py pins it).
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedglobal.config import ExperimentConfig
from fedglobal.engines import CLIENT_APP, SERVER_APP, load_component

log = logging.getLogger(__name__)

NODE_ID_OFFSET = 1000


class InProcessGrid(Grid):
    """A Grid whose nodes are ClientApp calls in this process, one per region."""

    def __init__(self, client_app: Any, regions: Sequence[str], *, run_id: int) -> None:
        self._client_app = client_app
        self._run = Run.create_empty(run_id=run_id)
        self._contexts = {
            NODE_ID_OFFSET + i: Context(
                run_id=run_id,
                node_id=NODE_ID_OFFSET + i,
                node_config={"region": region},
                state=RecordDict(),
                run_config={},
            )
            for i, region in enumerate(regions)
        }
        self._pending: dict[str, Message] = {}
        self._ids = itertools.count(1)
        self.delivered = 0

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
        return list(self._contexts)

    def region_of(self, node_id: int) -> str:
        return str(self._contexts[node_id].node_config["region"])

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            if message.metadata.dst_node_id not in self._contexts:
                raise ValueError(f"message for unknown node {message.metadata.dst_node_id}")
            message_id = f"m{next(self._ids)}"
            message.metadata.__dict__["_message_id"] = message_id
            self._pending[message_id] = message
            ids.append(message_id)
        return ids

    def _deliver(self, message: Message) -> Message:
        context = self._contexts[message.metadata.dst_node_id]
        try:
            reply = self._client_app(message, context)
        except Exception as exc:
            log.warning("region %s failed: %s", self.region_of(context.node_id), exc)
            reason = f"region {self.region_of(context.node_id)}: {type(exc).__name__}: {exc}"
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                reply_to=message,
            )
        reply.metadata.__dict__["_message_id"] = f"r{next(self._ids)}"
        self.delivered += 1
        return reply

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._deliver(self._pending.pop(i)) for i in message_ids if i in self._pending]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return list(self.pull_messages(list(self.push_messages(messages))))


def run_inprocess(
    cfg: ExperimentConfig, regions: Sequence[str], run_dir: Path, *, quiet: bool = False
) -> None:
    """Run the ServerApp against an InProcessGrid with one node per region."""
    run_id = zlib.crc32(f"{cfg.experiment.name}:{cfg.experiment.seed}".encode()) or 1
    server_app = load_component(SERVER_APP)
    client_app = load_component(CLIENT_APP)
    grid = InProcessGrid(client_app, regions, run_id=run_id)
    run_config = {
        "experiment-toml": cfg.to_toml(),
        "base-dir": cfg.base_dir,
        "run-dir": str(run_dir),
        "quiet": quiet,
        "engine": "inprocess",
    }
    context = Context(
        run_id=run_id,
        node_id=SUPERLINK_NODE_ID,
        node_config={},
        state=RecordDict(),
        run_config=run_config,
    )
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = run_id, SUPERLINK_NODE_ID, 1
    try:
        server_app(grid, context)
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
