"""Asynchronous aggregation: FedBuff and FedAsync, one server step per round of the loop.

- :class:`FedBuff`: Nguyen et al. 2022, "Federated Learning with Buffered
  Asynchronous Aggregation" (AISTATS, https://arxiv.org/abs/2106.06639).
- :class:`FedAsync`: Xie et al. 2019, "Asynchronous Federated Optimization"
  (https://arxiv.org/abs/1903.03934).

A *server step* is one round of the round loop (one row of rounds.csv, one
round of history.csv). The strategy is driven by an arrival order it does
not compute itself: fedglobal's simulated clock
(:mod:`fedglobal.geo.asynchronous`) makes ``grid.get_node_ids()`` list only
the regions that are idle, trains what the strategy sends them at once, and
hands ``aggregate_train`` the replies that *arrive* (in simulated time)
during the step: ``arrivals_per_step`` of them (FedBuff's K; FedAsync: 1).
Each such reply carries a ConfigRecord :data:`ASYNC_RECORD` with the round
its model was sent (:data:`DISPATCHED_ROUND`); its staleness is the current
round minus that one. A reply without it (an error reply, or a grid that
delivers every reply at once) has staleness 0.

The staleness of each aggregated reply is added to its ``metrics`` as
``staleness``, and its ``meta`` round (the round history.csv records it
under) becomes the step that aggregates it, before the train metrics are
aggregated, so the run's
history.csv has one ``staleness`` row per region and step and the pooled
``staleness_mean`` / ``staleness_max`` (:class:`fedglobal.server.history.HistoryRecorder`).

Concurrency: each step the strategy sends the current model to idle regions
until ``ceil(fraction_train * regions)`` are training (FedBuff's
concurrency C), sampled with ``default_rng([seed, round, 0])`` in region
order; ``fraction_train = 1`` keeps every region busy. ``min_train_clients``
is not used: a step sends to the regions that are idle, however few.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from .aggregate import Update
from .errors import InvalidParameterError, StateDictError, StrategyError
from .fedavg import META_KEY, METRICS_KEY, FedAvg
from .sampling import TRAIN_STREAM, region_order
from .staleness import STALENESS_FUNCTIONS, buffered_step, fedasync_weight, fedbuff_weight, mix

__all__ = ["ASYNC_RECORD", "DISPATCHED_ROUND", "STALENESS_KEY", "FedAsync", "FedBuff"]

#: The reply record the clock's driver adds: when the reply's model was sent.
ASYNC_RECORD = "async"
#: Its key: the round (server step) whose model the region trained from.
DISPATCHED_ROUND = "dispatched-round"
#: The metric added to each aggregated reply's metrics.
STALENESS_KEY = "staleness"
#: The reply ``meta`` key of the round a reply is recorded under (history.csv).
ROUND_KEY = "round"


def dispatched_round(message: Message, default: int) -> int:
    """The round whose model ``message`` (a train reply) was trained from."""
    if message.has_error() or not message.has_content():
        return default
    record = message.content.get(ASYNC_RECORD)
    if isinstance(record, ConfigRecord) and DISPATCHED_ROUND in record:
        return int(record[DISPATCHED_ROUND])
    return default


def _with_staleness(message: Message, staleness: int, server_round: int) -> Message:
    """A copy of ``message`` whose metrics also hold ``staleness`` and whose ``meta``
    round is ``server_round``, the step that aggregates it (the reply is not changed)."""
    content = RecordDict(dict(message.content.items()))
    metrics = content.get(METRICS_KEY)
    if isinstance(metrics, MetricRecord):
        content[METRICS_KEY] = MetricRecord({**dict(metrics.items()), STALENESS_KEY: staleness})
    meta = content.get(META_KEY)
    if isinstance(meta, ConfigRecord) and ROUND_KEY in meta:
        content[META_KEY] = ConfigRecord({**dict(meta.items()), ROUND_KEY: server_round})
    return Message(content=content, metadata=message.metadata)


class _Asynchronous(FedAvg):
    """What FedBuff and FedAsync share: dispatch to idle regions, staleness per reply."""

    #: Read by fedglobal's ServerApp: drive this strategy by the clock's arrivals.
    asynchronous = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Each step sends to the regions that are idle, often fewer than min_train_clients:
        # no minimum per step (the server's Grid checks the replies against this).
        self.min_train_nodes = 0
        self._outstanding: dict[int, int] = {}  # dispatch round -> replies still to come
        self._current: dict[str, np.ndarray] | None = None
        self._dispatch: dict[str, int] = {}  # this step: reply label -> dispatch round

    @property
    def arrivals_per_step(self) -> int:
        """How many arrivals one server step waits for."""
        raise NotImplementedError

    @property
    def in_flight(self) -> int:
        """Regions sent a model whose reply has not been aggregated yet."""
        return sum(self._outstanding.values())

    # ---- state -----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus ``"outstanding"``: ``[[dispatch round, replies to come]]``."""
        return {
            **super().state_dict(),
            "outstanding": [[int(r), int(n)] for r, n in sorted(self._outstanding.items())],
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        try:
            self._outstanding = {int(r): int(n) for r, n in state["outstanding"]}
        except (TypeError, ValueError) as exc:
            raise StateDictError(f"state 'outstanding' is not [[round, count]]: {exc}") from None

    # ---- configure -------------------------------------------------------------
    def _dispatched(self, server_round: int, arrays: ArrayRecord, count: int) -> None:
        if count:
            self._outstanding[server_round] = self._outstanding.get(server_round, 0) + count

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Send the current model to idle regions, up to the concurrency."""
        self._current = {name: array.numpy() for name, array in arrays.items()}
        if self.fraction_train == 0.0:
            return []
        key = region_order(grid)
        idle = sorted(grid.get_node_ids(), key=key)
        busy = self.in_flight
        concurrency = max(1, math.ceil(self.fraction_train * (len(idle) + busy)))
        want = min(len(idle), max(0, concurrency - busy))
        if want < len(idle):
            rng = np.random.default_rng([self.seed, server_round, TRAIN_STREAM])
            idle = [idle[i] for i in sorted(rng.choice(len(idle), size=want, replace=False))]
        log(
            INFO,
            "configure_train: %d region(s) sent step %d's model, %d still training",
            len(idle),
            server_round,
            busy,
        )
        self._remember(server_round, arrays)
        self._dispatched(server_round, arrays, len(idle))
        if not idle:
            return []
        record = RecordDict(
            {
                self.arrayrecord_key: arrays,
                self.configrecord_key: self._train_config(config, server_round),
            }
        )
        return self._construct_messages(record, idle, MessageType.TRAIN)

    # ---- aggregate -------------------------------------------------------------
    def _arrived(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Count the replies off their dispatch rounds; add their staleness to their metrics."""
        self._dispatch = {}
        out = []
        for msg in replies:
            sent = dispatched_round(msg, server_round)
            left = self._outstanding.get(sent, 0) - 1
            if left > 0:
                self._outstanding[sent] = left
            else:
                self._outstanding.pop(sent, None)
            if msg.has_error():
                out.append(msg)
                continue
            self._dispatch[self._label(msg)] = sent
            out.append(_with_staleness(msg, server_round - sent, server_round))
        self._forget()
        return out

    def _forget(self) -> None:
        """Drop what no outstanding reply needs any more (subclasses keep bases)."""

    def staleness_of(self, label: str, server_round: int) -> int:
        """The staleness of ``label``'s reply in this step."""
        return server_round - self._dispatch.get(label, server_round)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """One server step over the replies that arrived in it."""
        if self._current is None:
            raise StrategyError(
                f"{type(self).__name__}: aggregate_train before configure_train "
                "(a server step needs the current model)"
            )
        return super().aggregate_train(server_round, self._arrived(server_round, list(replies)))


class FedBuff(_Asynchronous):
    """Buffered asynchronous aggregation (Nguyen et al. 2022, "Federated Learning
    with Buffered Asynchronous Aggregation", AISTATS).

    The server steps every ``buffer_size`` (K) arrivals:

        x <- x + server_learning_rate * sum_i n_i * w(s_i) * (y_i - b_i) / sum_i n_i

    with ``y_i`` the region's trained model, ``b_i`` the model it was sent
    (``s_i`` steps ago) and ``w(s) = 1 / sqrt(1 + s)`` (the paper's staleness
    scaling). ``weighting = "examples"`` takes ``n_i`` = the region's train
    examples (so K = all regions, no staleness and learning rate 1 is FedAvg);
    ``"uniform"`` takes ``n_i = 1``, the paper's plain mean over the buffer.
    K is capped by the regions in flight: with K above the number of regions
    a step waits for all of them.

    Args:
        buffer_size: K, arrivals per server step (>= 1). The paper uses 10.
        server_learning_rate: the server's step size eta_g (> 0).
        weighting: ``"examples"`` or ``"uniform"``.
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters
            (``fraction_train`` is the concurrency: see :mod:`strategies.asynchronous`).
    """

    def __init__(
        self,
        *,
        buffer_size: int = 10,
        server_learning_rate: float = 1.0,
        weighting: str = "examples",
        **kwargs: Any,
    ) -> None:
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise InvalidParameterError(f"buffer_size must be an int >= 1, got {buffer_size!r}")
        if (
            isinstance(server_learning_rate, bool)
            or not isinstance(server_learning_rate, int | float)
            or not math.isfinite(server_learning_rate)
            or server_learning_rate <= 0
        ):
            raise InvalidParameterError(
                f"server_learning_rate must be a number > 0, got {server_learning_rate!r}"
            )
        if weighting not in ("examples", "uniform"):
            raise InvalidParameterError(
                f"weighting must be 'examples' or 'uniform', got {weighting!r}"
            )
        super().__init__(**kwargs)
        self.buffer_size = buffer_size
        self.server_learning_rate = float(server_learning_rate)
        self.weighting = weighting
        self._params.update(
            buffer_size=buffer_size,
            server_learning_rate=server_learning_rate,
            weighting=weighting,
        )
        self._versions: dict[int, dict[str, np.ndarray]] = {}  # dispatch round -> model sent

    @property
    def arrivals_per_step(self) -> int:
        return self.buffer_size

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(
            INFO,
            "\t├──> FedBuff: K = %d, server lr %g, %s weights, staleness 1/sqrt(1+s)",
            self.buffer_size,
            self.server_learning_rate,
            self.weighting,
        )
        super().summary()

    def state_dict(self) -> dict[str, Any]:
        """Adds ``"versions"``: the models sent in each round with replies still to come."""
        return {
            **super().state_dict(),
            "versions": {
                str(r): {k: np.array(v, copy=True) for k, v in arrays.items()}
                for r, arrays in sorted(self._versions.items())
            },
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        versions = state["versions"]
        if not isinstance(versions, dict):
            raise StateDictError("state 'versions' must be {round: {name: array}}")
        self._versions = {
            int(r): {k: np.asarray(v) for k, v in arrays.items()} for r, arrays in versions.items()
        }

    def _dispatched(self, server_round: int, arrays: ArrayRecord, count: int) -> None:
        super()._dispatched(server_round, arrays, count)
        if count and server_round not in self._versions:
            self._versions[server_round] = {k: a.numpy() for k, a in arrays.items()}

    def _forget(self) -> None:
        # The bases of this step's replies are still needed by _aggregate_arrays.
        needed = set(self._outstanding) | set(self._dispatch.values())
        self._versions = {r: v for r, v in self._versions.items() if r in needed}

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        assert self._current is not None  # aggregate_train checked it

        def scaled() -> Iterable[tuple[str, Any, Any, float, float]]:
            for label, arrays, weight in updates:
                sent = self._dispatch.get(label, server_round)
                base = self._versions.get(sent, self._current)
                n = 1.0 if self.weighting == "uniform" else float(weight)  # type: ignore[arg-type]
                yield label, arrays, base, n, fedbuff_weight(server_round - sent)

        new = buffered_step(self._current, scaled(), server_lr=self.server_learning_rate)
        self._versions = {r: v for r, v in self._versions.items() if r in self._outstanding}
        return new


class FedAsync(_Asynchronous):
    """Asynchronous federated optimisation (Xie et al. 2019, "Asynchronous
    Federated Optimization").

    Each arrival is one server step: ``x <- (1 - a) x + a y`` with
    ``a = alpha * S(s)``, ``y`` the region's trained model and ``s`` its
    staleness, and ``S`` one of (section 5.2 of the paper):

    - ``constant``: ``S(s) = 1``;
    - ``polynomial``: ``S(s) = (s + 1) ** -a``;
    - ``hinge``: ``S(s) = 1`` for ``s <= b``, else ``1 / (a (s - b) + 1)``.

    Args:
        alpha: the mixing weight in (0, 1]. The paper uses 0.6 and 0.9.
        staleness: ``constant`` | ``polynomial`` | ``hinge``.
        staleness_a: ``a`` of the polynomial and hinge functions (> 0). The paper
            uses 0.5 (polynomial) and 10 (hinge).
        staleness_b: ``b`` of the hinge function (an int >= 0). The paper uses 4.
        **kwargs: the :class:`~strategies.fedavg.FedAvg` parameters.
    """

    def __init__(
        self,
        *,
        alpha: float = 0.6,
        staleness: str = "polynomial",
        staleness_a: float = 0.5,
        staleness_b: int = 4,
        **kwargs: Any,
    ) -> None:
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, int | float)
            or not 0.0 < float(alpha) <= 1.0
        ):
            raise InvalidParameterError(f"alpha must be a number in (0, 1], got {alpha!r}")
        if staleness not in STALENESS_FUNCTIONS:
            raise InvalidParameterError(
                f"staleness must be one of {', '.join(STALENESS_FUNCTIONS)}, got {staleness!r}"
            )
        if (
            isinstance(staleness_a, bool)
            or not isinstance(staleness_a, int | float)
            or not math.isfinite(staleness_a)
            or staleness_a <= 0
        ):
            raise InvalidParameterError(f"staleness_a must be a number > 0, got {staleness_a!r}")
        if isinstance(staleness_b, bool) or not isinstance(staleness_b, int) or staleness_b < 0:
            raise InvalidParameterError(f"staleness_b must be an int >= 0, got {staleness_b!r}")
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.staleness = staleness
        self.staleness_a = float(staleness_a)
        self.staleness_b = int(staleness_b)
        self._params.update(
            alpha=alpha, staleness=staleness, staleness_a=staleness_a, staleness_b=staleness_b
        )

    @property
    def arrivals_per_step(self) -> int:
        return 1

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(
            INFO,
            "\t├──> FedAsync: alpha %g, %s staleness (a %g, b %d)",
            self.alpha,
            self.staleness,
            self.staleness_a,
            self.staleness_b,
        )
        super().summary()

    def mixing_weight(self, staleness: int) -> float:
        """``alpha * S(staleness)``."""
        return self.alpha * fedasync_weight(
            staleness, self.staleness, a=self.staleness_a, b=self.staleness_b
        )

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        assert self._current is not None  # aggregate_train checked it
        current: dict[str, np.ndarray] = dict(self._current)
        for label, arrays, _ in updates:  # in order of arrival
            weight = self.mixing_weight(self.staleness_of(label, server_round))
            current = mix(current, arrays, weight, client=label)
        return current
