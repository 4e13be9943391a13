"""The ServerApp's side of checkpoint and resume (file format: :mod:`fedglobal.run.checkpoint`).

:class:`Checkpointer` runs after every round (``after_round`` of
:func:`fedglobal.server.rounds.run_rounds`). Every ``[server] checkpoint_every``
rounds, and after the last, it gathers the run's state and writes
``resume.npz``: the global weights, the strategy's ``state_dict()``, the
history and monitor state, the global RNG states, and each region's ClientApp
state, asked for with a ``query.client_state`` message (:mod:`clients.state`).

:func:`restore` puts a checkpoint back into a freshly started run: the
strategy's and monitor's state, the history, the RNG states, and each region's
ClientApp state (``query.restore_client_state``). Then the rounds continue
from the checkpoint's round + 1.

State messages go through the engine's Grid under the ServerGrid only (not
the byte counter), so rounds.csv is the same as in an uninterrupted run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.serde import recorddict_from_proto, recorddict_to_proto
from flwr.proto.recorddict_pb2 import RecordDict as ProtoRecordDict
from flwr.serverapp import Grid

from fedglobal.errors import CheckpointError
from fedglobal.protocol import (
    META_KEY,
    REGION_KEY,
    RESTORE_QUERY,
    STATE_PREFIX,
    STATE_QUERY,
    from_record,
)
from fedglobal.run import checkpoint
from fedglobal.run.checkpoint import Checkpoint
from strategies.interface import Stateful

__all__ = ["Checkpointer", "collect_client_state", "restore", "restore_client_state"]

log = logging.getLogger(__name__)


def collect_client_state(
    grid: Grid, config: ConfigRecord, timeout: float | None
) -> tuple[dict[str, bytes], list[str]]:
    """Ask every node for its ClientApp state.

    Returns ``({region: serialized RecordDict}, [failure reasons])``; regions
    with an empty state are left out.
    """
    nodes = sorted(grid.get_node_ids())
    messages = [
        Message(RecordDict({"config": ConfigRecord(dict(config))}), node, STATE_QUERY)
        for node in nodes
    ]
    states: dict[str, bytes] = {}
    failed: list[str] = []
    for reply in grid.send_and_receive(messages, timeout=timeout):
        if reply.has_error():
            failed.append(reply.error.reason)
            continue
        region = str(reply.content[META_KEY][REGION_KEY])
        state = RecordDict(
            {
                key[len(STATE_PREFIX) :]: record
                for key, record in reply.content.items()
                if key.startswith(STATE_PREFIX)
            }
        )
        if len(state):
            states[region] = recorddict_to_proto(state).SerializeToString()
    return states, failed


def restore_client_state(
    grid: Grid,
    states: dict[str, bytes],
    region_of: Callable[[int], str],
    config: ConfigRecord,
    timeout: float | None,
) -> None:
    """Send every node its region's saved state (nodes whose region has none get nothing).

    Raises:
        CheckpointError: a region of the checkpoint is not connected, or a node
            failed to take its state.
    """
    by_region = {region_of(node): node for node in sorted(grid.get_node_ids())}
    missing = sorted(set(states) - set(by_region))
    if missing:
        raise CheckpointError(
            f"the checkpoint holds client state of region(s) {missing[:5]} that are not "
            "connected; resume with the same regions"
        )
    messages = []
    for region, data in sorted(states.items()):
        proto = ProtoRecordDict()
        proto.ParseFromString(data)
        content = RecordDict({"config": ConfigRecord(dict(config))})
        for key, record in recorddict_from_proto(proto).items():
            content[f"{STATE_PREFIX}{key}"] = record
        messages.append(Message(content, by_region[region], RESTORE_QUERY))
    if not messages:
        return
    failed = [
        r.error.reason for r in grid.send_and_receive(messages, timeout=timeout) if r.has_error()
    ]
    if failed:
        raise CheckpointError(
            "regions could not restore their client state from the checkpoint: "
            + "; ".join(failed[:5])
        )


class Checkpointer:
    """Writes ``resume.npz`` after rounds (see the module docstring).

    Args:
        run_dir: the run folder.
        every: write every this many rounds (0: never); the last round always.
        num_rounds: the run's last round.
        config_toml: the resolved experiment.
        schema_json: the federated schema.
        strategy: the strategy (its ``state_dict()`` is saved, if it has one).
        recorder: the :class:`~fedglobal.server.history.HistoryRecorder`.
        monitor: the :class:`~fedglobal.server.monitor.RunMonitor`.
        state_grid: the Grid client-state queries go through (not counted).
        state_config: the config record sent with them (experiment, base dir).
        timeout: seconds to wait for the clients' replies.
        extra: called at each checkpoint for more JSON values to save.
        collect_state: ask the regions for their ClientApp state (in-process
            engine only; elsewhere the checkpoint holds none and says so).
    """

    def __init__(
        self,
        run_dir: Any,
        *,
        every: int,
        num_rounds: int,
        config_toml: str,
        schema_json: str,
        strategy: Any,
        recorder: Any,
        monitor: Any,
        state_grid: Grid,
        state_config: ConfigRecord,
        timeout: float | None,
        extra: Callable[[], dict[str, Any]] | None = None,
        collect_state: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.collect_state = collect_state
        self.every = int(every)
        self.num_rounds = int(num_rounds)
        self.config_toml = config_toml
        self.schema_json = schema_json
        self.strategy = strategy
        self.recorder = recorder
        self.monitor = monitor
        self.state_grid = state_grid
        self.state_config = state_config
        self.timeout = timeout
        self.extra = extra
        self.written: list[int] = []
        self._warned = False

    def due(self, server_round: int) -> bool:
        """Whether a checkpoint is written after ``server_round``."""
        if self.every <= 0:
            return False
        return server_round % self.every == 0 or server_round >= self.num_rounds

    def __call__(self, server_round: int, arrays: Any) -> None:
        """After round ``server_round``: write the checkpoint if it is due."""
        if not self.due(server_round):
            return
        states: dict[str, bytes] = {}
        failed: list[str] = []
        if self.collect_state:
            states, failed = collect_client_state(self.state_grid, self.state_config, self.timeout)
        if failed and not self._warned:
            self._warned = True
            log.warning(
                "%d region(s) did not send their client state for the checkpoint (a resumed "
                "run may then differ from an uninterrupted one): %s",
                len(failed),
                failed[0],
            )
        strategy_state = None
        if hasattr(self.strategy, "state_dict"):
            strategy_state = self.strategy.state_dict()
        ckpt = Checkpoint(
            round=server_round,
            weights=from_record(arrays),
            strategy_state=strategy_state,
            config_toml=self.config_toml,
            schema_json=self.schema_json,
            history=list(self.recorder.rows),
            monitor=self.monitor.state_dict(),
            rng=checkpoint.rng_state(),
            client_state=states,
            extra={
                "client_state_complete": self.collect_state and not failed,
                **(self.extra() if self.extra is not None else {}),
            },
        )
        checkpoint.write(self.run_dir, ckpt)
        self.written.append(server_round)
        log.info("round %d: checkpoint written to %s", server_round, ckpt.path)


def restore(
    ckpt: Checkpoint,
    *,
    strategy: Any,
    recorder: Any,
    monitor: Any,
    schema_json: str,
    names: Sequence[str],
    state_grid: Grid,
    region_of: Callable[[int], str],
    state_config: ConfigRecord,
    timeout: float | None,
) -> None:
    """Put ``ckpt`` back into a run that has sent its start-up messages.

    Raises:
        CheckpointError: the data's schema or the model's variables differ from
            the checkpoint's, or the strategy cannot take its state.
    """
    where = ckpt.path
    if ckpt.schema_json != schema_json:
        raise CheckpointError(
            f"cannot resume from {where}: the federated schema differs from the checkpoint's "
            "(the regions' data changed); resume with the same data"
        )
    if list(ckpt.weights) != list(names):
        missing = sorted(set(names) - set(ckpt.weights))[:5]
        extra = sorted(set(ckpt.weights) - set(names))[:5]
        raise CheckpointError(
            f"cannot resume from {where}: the model's variables differ from the checkpoint's "
            f"(missing {missing}, unexpected {extra})"
        )
    if ckpt.strategy_state is not None and isinstance(strategy, Stateful):
        try:
            strategy.load_state_dict(ckpt.strategy_state)
        except Exception as exc:
            raise CheckpointError(
                f"cannot resume from {where}: the strategy cannot load its saved state: {exc}"
            ) from exc
    if not ckpt.extra.get("client_state_complete", True):
        log.warning(
            "%s lacks some regions' client state: the resumed run may differ from an "
            "uninterrupted one",
            where,
        )
    recorder.rows = [
        (int(r), str(region), str(split), str(metric), float(value))
        for r, region, split, metric, value in ckpt.history
    ]
    monitor.load_state_dict(ckpt.monitor, ckpt.weights)
    restore_client_state(state_grid, ckpt.client_state, region_of, state_config, timeout)
    checkpoint.set_rng_state(ckpt.rng)
