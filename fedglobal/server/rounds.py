"""The ServerApp's round loop: Flower's ``Strategy.start``, from any round.

Flower's ``Strategy.start`` (flwr 1.41, ``flwr/serverapp/strategy/strategy.py``)
always runs rounds ``1..num_rounds``. A resumed run starts after its checkpoint,
so this loop does what ``start`` does, step for step (configure_train,
send_and_receive, aggregate_train, configure_evaluate, send_and_receive,
aggregate_evaluate, ``evaluate_fn(round, arrays)``), from ``first_round``, and
calls ``after_round(round, arrays)`` once the round is complete (the
checkpoint). From round 1 it also calls ``evaluate_fn(0, initial_arrays)`` first,
as ``start`` does.

``train_grid(round, grid)``, when given, is the grid of each round's
``configure_train`` and train exchange: the simulated clock's view
(:meth:`fedglobal.geo.grid.GeoRounds.for_round`) under ``[geo]``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from flwr.serverapp import Grid

from strategies.interface import view

__all__ = ["RoundsResult", "run_rounds"]

log = logging.getLogger(__name__)

EvaluateFn = Callable[[int, ArrayRecord], MetricRecord | None]
AfterRound = Callable[[int, ArrayRecord], None]
TrainGrid = Callable[[int, Grid], Grid]


@dataclass
class RoundsResult:
    """What :func:`run_rounds` returns.

    Attributes:
        arrays: the global arrays after the last round.
        aggregated: whether any round aggregated an update (as Flower's
            ``Result.arrays is not None``).
        last_round: the last round run.
    """

    arrays: ArrayRecord
    aggregated: bool
    last_round: int


def run_rounds(
    strategy: Any,
    *,
    grid: Grid,
    initial_arrays: ArrayRecord,
    num_rounds: int,
    first_round: int = 1,
    timeout: float = 3600,
    train_config: ConfigRecord | None = None,
    evaluate_config: ConfigRecord | None = None,
    evaluate_fn: EvaluateFn | None = None,
    after_round: AfterRound | None = None,
    train_grid: TrainGrid | None = None,
) -> RoundsResult:
    """Run rounds ``first_round..num_rounds`` of ``strategy`` (see the module docstring)."""
    train_config = ConfigRecord() if train_config is None else train_config
    evaluate_config = ConfigRecord() if evaluate_config is None else evaluate_config
    view(strategy).summary()
    arrays = initial_arrays
    if first_round <= 1 and evaluate_fn is not None:
        evaluate_fn(0, arrays)
    aggregated = False
    last = first_round - 1
    for server_round in range(max(1, first_round), num_rounds + 1):
        log.info("[ROUND %s/%s]", server_round, num_rounds)
        trains = grid if train_grid is None else train_grid(server_round, grid)
        replies = trains.send_and_receive(
            messages=strategy.configure_train(server_round, arrays, train_config, trains),
            timeout=timeout,
        )
        new_arrays, _ = strategy.aggregate_train(server_round, replies)
        if new_arrays is not None:
            arrays, aggregated = new_arrays, True
        replies = grid.send_and_receive(
            messages=strategy.configure_evaluate(server_round, arrays, evaluate_config, grid),
            timeout=timeout,
        )
        strategy.aggregate_evaluate(server_round, replies)
        if evaluate_fn is not None:
            evaluate_fn(server_round, arrays)
        last = server_round
        if after_round is not None:
            after_round(server_round, arrays)
    return RoundsResult(arrays=arrays, aggregated=aggregated, last_round=last)
