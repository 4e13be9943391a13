"""Injected client faults, for testing how a run survives failing regions.

A fault plan makes chosen regions fail at a chosen round, in the process that
runs their ClientApp: the server's own process, an in-process worker
(``experiment.workers``), a Ray actor or a SuperNode. The plan is read from
the environment variable ``FEDGLOBAL_FAULTS`` (JSON), set by a test (or by
hand) before the run; the in-process engine's worker pool mirrors it into
its workers before each batch, as it does ``FEDGLOBAL_ATTACK``. With no
variable set, nothing happens.

The variable holds one fault or a list of faults, each a JSON object:

- ``region`` (required): the region's name.
- ``kind`` (required): ``raise`` (the ClientApp raises: an error reply),
  ``hang`` (it sleeps ``seconds``, default 3600, before replying) or
  ``exit`` (the process running the ClientApp ends at once, exit code 17:
  with ``workers <= 1`` on the in-process engine that is the run itself).
- ``round``: the server round (``server-round`` of the message); default any.
- ``stage``: ``train`` (default), ``evaluate``, ``query`` or ``any``.
- ``attempt``: fail only this attempt of the round (0 the first send, 1 the
  first retry: ``[server] round_retries``); default every attempt.
- ``seconds``: how long a ``hang`` sleeps.

Example: ``FEDGLOBAL_FAULTS='{"region": "asia", "round": 2, "kind": "raise"}'``.
See docs/faults.md.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedglobal.protocol import SERVER_ROUND_KEY

__all__ = ["ENV_VAR", "EXIT_CODE", "KINDS", "Fault", "InjectedFault", "fault_mod", "for_message"]

log = logging.getLogger(__name__)

ENV_VAR = "FEDGLOBAL_FAULTS"
KINDS = ("raise", "hang", "exit")
STAGES = ("train", "evaluate", "query", "any")
EXIT_CODE = 17
_KEYS = ("region", "kind", "round", "stage", "attempt", "seconds")
#: Message config key of the attempt number (set by fedglobal.server.grid on a retry).
ATTEMPT_KEY = "attempt"


class InjectedFault(RuntimeError):
    """The error a ``raise`` fault raises in the ClientApp."""


@dataclass(frozen=True)
class Fault:
    """One injected fault (see the module docstring for the fields)."""

    region: str
    kind: str
    round: int | None = None
    stage: str = "train"
    attempt: int | None = None
    seconds: float = 3600.0

    @classmethod
    def from_dict(cls, raw: Any) -> Fault:
        """A validated fault; ValueError names the key, the value and what is allowed."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"{ENV_VAR}: each fault must be a JSON object, got {raw!r}")
        unknown = sorted(set(raw) - set(_KEYS))
        if unknown:
            raise ValueError(f"{ENV_VAR}: unknown keys {unknown} in {dict(raw)}; allowed: {_KEYS}")
        if not isinstance(raw.get("region"), str):
            raise ValueError(
                f"{ENV_VAR}: 'region' must be a region name, got {raw.get('region')!r}"
            )
        kind, stage = raw.get("kind"), raw.get("stage", "train")
        if kind not in KINDS:
            raise ValueError(f"{ENV_VAR}: 'kind' = {kind!r} is not one of {KINDS}")
        if stage not in STAGES:
            raise ValueError(f"{ENV_VAR}: 'stage' = {stage!r} is not one of {STAGES}")
        for key in ("round", "attempt"):
            value = raw.get(key)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{ENV_VAR}: {key!r} must be an integer >= 0, got {value!r}")
        seconds = raw.get("seconds", 3600.0)
        if not isinstance(seconds, int | float) or seconds < 0:
            raise ValueError(f"{ENV_VAR}: 'seconds' must be a number >= 0, got {seconds!r}")
        return cls(
            region=raw["region"],
            kind=kind,
            round=raw.get("round"),
            stage=stage,
            attempt=raw.get("attempt"),
            seconds=float(seconds),
        )


def plan() -> list[Fault]:
    """The faults of ``FEDGLOBAL_FAULTS`` (empty when unset)."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ENV_VAR} is not valid JSON ({exc}): {text!r}") from None
    return [Fault.from_dict(f) for f in (raw if isinstance(raw, list) else [raw])]


def _stage(message: Message) -> str:
    kind = str(message.metadata.message_type)
    if kind == MessageType.TRAIN:
        return "train"
    if kind == MessageType.EVALUATE:
        return "evaluate"
    return "query"


def for_message(message: Message, context: Context) -> Fault | None:
    """The fault that applies to ``message`` at this node, if any."""
    faults = plan()
    if not faults or not message.has_content():
        return None
    region = context.node_config.get("region")
    config = message.content.get("config")
    server_round = int(config.get(SERVER_ROUND_KEY, 0)) if config is not None else 0
    attempt = int(config.get(ATTEMPT_KEY, 0)) if config is not None else 0
    stage = _stage(message)
    for fault in faults:
        if (
            fault.region == region
            and fault.round in (None, server_round)
            and fault.stage in ("any", stage)
            and fault.attempt in (None, attempt)
        ):
            return fault
    return None


def fault_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Apply the fault planned for this message (``FEDGLOBAL_FAULTS``), else pass it on."""
    fault = for_message(msg, ctxt)
    if fault is None:
        return call_next(msg, ctxt)
    where = f"region {fault.region} {_stage(msg)} (pid {os.getpid()})"
    if fault.kind == "raise":
        raise InjectedFault(f"injected fault ({ENV_VAR}): {where}")
    if fault.kind == "exit":
        log.warning("injected fault (%s): %s exits with code %d", ENV_VAR, where, EXIT_CODE)
        os._exit(EXIT_CODE)
    log.warning("injected fault (%s): %s hangs for %gs", ENV_VAR, where, fault.seconds)
    time.sleep(fault.seconds)
    return call_next(msg, ctxt)
