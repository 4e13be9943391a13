"""Deterministic client sampling and bounded waiting for clients.

Every random choice derives from (seed, round): the same seed and round give the
same sample whatever order the Grid lists its nodes in (DESIGN decision 8).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.supercore import log

from .errors import NotEnoughClientsError

__all__ = [
    "EVALUATE_STREAM",
    "STRAGGLER_STREAM",
    "TRAIN_STREAM",
    "region_order",
    "sample_clients",
    "select_stragglers",
    "wait_for_clients",
]

TRAIN_STREAM = 0
EVALUATE_STREAM = 1
STRAGGLER_STREAM = 2


def sample_clients(
    node_ids: Iterable[int],
    *,
    fraction: float,
    minimum: int,
    seed: int,
    server_round: int,
    stream: int,
    key: Callable[[int], Any] | None = None,
) -> list[int]:
    """Sample ``max(int(n * fraction), minimum)`` node ids (capped at ``n``).

    Sampling is without replacement from ``sorted(node_ids, key=key)`` with
    ``numpy.random.default_rng([seed, server_round, stream])``; the result keeps
    that order. Strategies pass the node's region as ``key``, so the same regions
    are sampled on every engine whatever node ids the engine assigned.
    """
    ids = sorted(node_ids, key=key)
    size = min(max(int(len(ids) * fraction), minimum), len(ids))
    rng = np.random.default_rng([seed, server_round, stream])
    chosen = rng.choice(len(ids), size=size, replace=False)
    return [ids[i] for i in sorted(chosen.tolist())]


def region_order(grid: Any) -> Callable[[int], Any] | None:
    """A sort key putting node ids in the order of their regions' names.

    fedglobal's ServerApp grid offers ``region_of(node_id)`` (every node replied
    to the schema query before round 1); a grid without it keeps node-id order.
    Engines number nodes differently (in-process: by sorted region; Ray and
    deployment: at random), so sampling in region order is what makes the same
    seed sample the same regions everywhere.
    """
    region_of = getattr(grid, "region_of", None)
    if region_of is None:
        return None
    return lambda node_id: (str(region_of(node_id)), node_id)


def select_stragglers(
    node_ids: Iterable[int],
    *,
    fraction: float,
    max_steps: int,
    seed: int,
    server_round: int,
    key: Callable[[int], Any] | None = None,
) -> dict[int, int]:
    """Pick this round's stragglers and how many local steps each completes.

    ``int(n * fraction)`` of the sampled ``node_ids`` straggle; each does a number
    of local steps drawn uniformly from ``[1, max_steps]``. Both draws use
    ``numpy.random.default_rng([seed, server_round, STRAGGLER_STREAM])`` over
    ``sorted(node_ids, key=key)``, so they depend only on (seed, round) and the
    sample.

    Returns:
        ``{node_id: local_steps}`` for the stragglers (empty if none).
    """
    ids = sorted(node_ids, key=key)
    size = min(int(len(ids) * fraction), len(ids))
    if size == 0:
        return {}
    rng = np.random.default_rng([seed, server_round, STRAGGLER_STREAM])
    chosen = sorted(rng.choice(len(ids), size=size, replace=False).tolist())
    steps = rng.integers(1, max_steps, size=size, endpoint=True).tolist()
    return {ids[i]: int(k) for i, k in zip(chosen, steps, strict=True)}


def wait_for_clients(
    get_node_ids: Callable[[], Iterable[int]],
    required: int,
    *,
    timeout: float,
    poll: float = 0.5,
) -> list[int]:
    """Poll ``get_node_ids`` until ``required`` nodes are connected; return them sorted.

    Raises:
        NotEnoughClientsError: still fewer than ``required`` after ``timeout`` seconds.
    """
    start = time.monotonic()
    while True:
        ids = sorted(get_node_ids())
        if len(ids) >= required:
            return ids
        waited = time.monotonic() - start
        if waited >= timeout:
            raise NotEnoughClientsError(required, len(ids), timeout)
        log(
            INFO,
            "Waiting for clients: %d connected, %d required (%.0fs left)",
            len(ids),
            required,
            timeout - waited,
        )
        time.sleep(min(poll, timeout - waited))
