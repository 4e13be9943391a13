"""FedAvg over named arrays, with checked replies and deterministic sampling.

Federated Averaging: McMahan et al. 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data" (https://arxiv.org/abs/1602.05629).

Differences from ``flwr.serverapp.strategy.FedAvg``, which this subclasses:

- the caller's ConfigRecord is copied, never mutated;
- sampling derives from ``(seed, round)`` and waiting for clients is bounded by
  ``wait_timeout`` (then :class:`~strategies.errors.NotEnoughClientsError`);
- each reply is checked (weight, names, shapes, dtypes, finiteness) against the
  arrays sent that round; a bad reply is rejected, logged and recorded in
  ``self.rejected`` while the others are aggregated;
- aggregation streams through :func:`strategies.aggregate.weighted_average`;
- stragglers can be simulated (``stragglers``): each round a seeded fraction of
  the sampled clients is told to stop after a random number of local steps
  (config key ``"local-steps"``); FedAvg drops their updates, as in the FedProx
  paper's comparison (Li et al. 2020), unless ``drop_stragglers=False``;
- ``state_dict()`` / ``load_state_dict()`` save and restore what the strategy
  carries between rounds (plain Python and NumPy values).
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg as FlowerFedAvg
from flwr.supercore import log

from .aggregate import (
    Update,
    check_count,
    check_update,
    check_weight,
    reference_of,
    weighted_average,
)
from .errors import (
    AggregationError,
    InvalidParameterError,
    InvalidWeightError,
    StateDictError,
    StrategyError,
)
from .sampling import (
    EVALUATE_STREAM,
    TRAIN_STREAM,
    region_order,
    sample_clients,
    select_stragglers,
    wait_for_clients,
)

__all__ = ["LOCAL_STEPS_KEY", "FedAvg", "MetricsAggrFn"]

MetricsAggrFn = Callable[[list[RecordDict], str], MetricRecord]

#: Keys of the reply content (the wire format shared with ``clients``).
METRICS_KEY = "metrics"
META_KEY = "meta"
REGION_KEY = "region"

#: Train config key limiting a client's local steps this round (stragglers).
LOCAL_STEPS_KEY = "local-steps"


def _fraction(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0
    ):
        raise InvalidParameterError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _seconds(name: str, value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or value < 0
    ):
        raise InvalidParameterError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidParameterError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterError(f"{name} must be true or false, got {value!r}")
    return value


def _callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise InvalidParameterError(f"{name} must be a callable or None, got {value!r}")


class FedAvg(FlowerFedAvg):
    """Federated Averaging (McMahan et al. 2017) over named Keras weights.

    Args:
        fraction_train: fraction of connected clients sampled for training, in [0, 1].
            0 skips federated training.
        fraction_evaluate: same for federated evaluation.
        min_train_clients: at least this many clients train each round.
        min_evaluate_clients: at least this many clients evaluate each round.
        min_available_clients: wait for this many connected clients before sampling.
        seed: sampling seed; the sample of round r uses ``default_rng([seed, r, 0])``
            for training and ``[seed, r, 1]`` for evaluation.
        wait_timeout: seconds to wait for enough clients before raising
            :class:`~strategies.errors.NotEnoughClientsError`.
        train_metrics_aggr_fn: ``(list[RecordDict], weight_key) -> MetricRecord``;
            default Flower's example-weighted ``aggregate_metricrecords``.
        evaluate_metrics_aggr_fn: same for evaluation replies.
        stragglers: fraction of each round's sampled train clients that straggle,
            in [0, 1]: ``int(n * stragglers)`` of the ``n`` sampled clients, chosen
            with ``default_rng([seed, r, 2])``. They are told,
            through the train config key ``"local-steps"``, to stop after a number
            of local steps drawn uniformly from ``[1, straggler_max_steps]``
            (a client never does more than its full work). This simulates
            systems heterogeneity as in FedProx (Li et al. 2020, section 5.2).
        straggler_max_steps: the most local steps a straggler completes (>= 1).
            Set it below the clients' full work per round (``epochs x batches``,
            or ``[client] steps``) for the stragglers to be partial.
        max_examples: a reply claiming more examples than this is rejected as
            absurd (one client could otherwise outweigh all others).
        drop_stragglers: whether straggler replies are dropped (FedAvg: the server
            does not wait for devices that miss the deadline) rather than
            aggregated (FedProx keeps their partial work). Dropped replies are
            recorded in ``dropped``.

    Attributes:
        rejected: replies refused by the checks, as dicts with keys round, stage,
            region, node, reason.
        failures: error replies (the client raised), same keys.
        dropped: straggler replies dropped (``drop_stragglers``), same keys.
    """

    def __init__(
        self,
        *,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_clients: int = 2,
        min_evaluate_clients: int = 2,
        min_available_clients: int = 2,
        seed: int = 0,
        wait_timeout: float = 60.0,
        train_metrics_aggr_fn: MetricsAggrFn | None = None,
        evaluate_metrics_aggr_fn: MetricsAggrFn | None = None,
        stragglers: float = 0.0,
        straggler_max_steps: int = 1,
        drop_stragglers: bool = True,
        max_examples: float = 1e9,
    ) -> None:
        self._params: dict[str, Any] = {
            "fraction_train": fraction_train,
            "fraction_evaluate": fraction_evaluate,
            "min_train_clients": min_train_clients,
            "min_evaluate_clients": min_evaluate_clients,
            "min_available_clients": min_available_clients,
            "seed": seed,
            "wait_timeout": wait_timeout,
            "train_metrics_aggr_fn": train_metrics_aggr_fn,
            "evaluate_metrics_aggr_fn": evaluate_metrics_aggr_fn,
            "stragglers": stragglers,
            "straggler_max_steps": straggler_max_steps,
            "drop_stragglers": drop_stragglers,
            "max_examples": max_examples,
        }
        _callable("train_metrics_aggr_fn", train_metrics_aggr_fn)
        _callable("evaluate_metrics_aggr_fn", evaluate_metrics_aggr_fn)
        super().__init__(
            fraction_train=_fraction("fraction_train", fraction_train),
            fraction_evaluate=_fraction("fraction_evaluate", fraction_evaluate),
            min_train_nodes=check_count("min_train_clients", min_train_clients),
            min_evaluate_nodes=check_count("min_evaluate_clients", min_evaluate_clients),
            min_available_nodes=check_count("min_available_clients", min_available_clients),
            train_metrics_aggr_fn=train_metrics_aggr_fn,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn,
        )
        self.seed = check_count("seed", seed)
        self.wait_timeout = _seconds("wait_timeout", wait_timeout)
        self.stragglers = _fraction("stragglers", stragglers)
        self.straggler_max_steps = _positive_int("straggler_max_steps", straggler_max_steps)
        self.drop_stragglers = _flag("drop_stragglers", drop_stragglers)
        self.max_examples = _seconds("max_examples", max_examples)
        self.rejected: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.dropped: list[dict[str, Any]] = []
        self._regions: dict[int, str] = {}
        self._straggling: tuple[int | None, dict[int, int]] = (None, {})
        self._sent_round: int | None = None
        self._reference: dict[str, tuple[tuple[int, ...], np.dtype]] | None = None

    def get_config(self) -> dict[str, Any]:
        """Constructor parameters: ``type(s)(**s.get_config())`` builds an equal strategy."""
        return dict(self._params)

    def summary(self) -> None:
        """Log the strategy's configuration."""
        super().summary()
        log(INFO, "\t└──> Seed: %d | wait_timeout: %.1fs", self.seed, self.wait_timeout)
        if self.stragglers:
            log(
                INFO,
                "\t└──> Stragglers: %.0f%% (<= %d local steps), %s",
                100 * self.stragglers,
                self.straggler_max_steps,
                "dropped" if self.drop_stragglers else "aggregated",
            )

    # ---- state -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What the strategy carries between rounds, as plain Python and NumPy values.

        Keys: ``"strategy"`` (the class name), ``"rejected"``, ``"failures"``,
        ``"dropped"`` (the logs, lists of dicts) and ``"regions"`` (node id ->
        region label seen in replies); subclasses add their own (server optimizer
        moments...). The result is a deep copy: changing it does not change the
        strategy. Sampling and stragglers derive from (seed, round) and need no
        state.
        """
        return {
            "strategy": type(self).__name__,
            "rejected": copy.deepcopy(self.rejected),
            "failures": copy.deepcopy(self.failures),
            "dropped": copy.deepcopy(self.dropped),
            "regions": dict(self._regions),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a strategy of the same class.

        Raises:
            StateDictError: another class, or missing or unexpected keys.
        """
        if not isinstance(state, Mapping):
            raise StateDictError(f"state must be a mapping, got {type(state).__name__}")
        name = type(self).__name__
        if state.get("strategy") != name:
            raise StateDictError(
                f"state dict is for strategy {state.get('strategy')!r}, not {name!r}"
            )
        expected = set(self.state_dict())
        missing = sorted(expected - set(state))
        extra = sorted(set(state) - expected)
        if missing or extra:
            raise StateDictError(
                f"{name} state dict: missing keys {missing}, unexpected keys {extra}"
            )
        self._load_state(copy.deepcopy(dict(state)))

    def _load_state(self, state: dict[str, Any]) -> None:
        """Set attributes from a checked state dict; subclasses extend it."""
        self.rejected = list(state["rejected"])
        self.failures = list(state["failures"])
        self.dropped = list(state["dropped"])
        self._regions = {int(k): str(v) for k, v in state["regions"].items()}

    # ---- configure -------------------------------------------------------------

    def _sample(self, grid: Grid, server_round: int, *, train: bool) -> list[int]:
        fraction = self.fraction_train if train else self.fraction_evaluate
        minimum = self.min_train_nodes if train else self.min_evaluate_nodes
        required = max(self.min_available_nodes, minimum)
        ids = wait_for_clients(grid.get_node_ids, required, timeout=self.wait_timeout)
        sampled = sample_clients(
            ids,
            fraction=fraction,
            minimum=minimum,
            seed=self.seed,
            server_round=server_round,
            stream=TRAIN_STREAM if train else EVALUATE_STREAM,
            key=region_order(grid),
        )
        stage = "train" if train else "evaluate"
        log(
            INFO,
            "configure_%s: sampled %d clients (out of %d)",
            stage,
            len(sampled),
            len(ids),
        )
        return sampled

    def _round_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        """Copy of ``config`` with this round's keys added (the caller's stays intact)."""
        out = ConfigRecord(dict(config.items()) if config is not None else {})
        out["server-round"] = server_round
        return out

    def _train_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        """This round's train config (a copy); subclasses add training keys."""
        return self._round_config(config, server_round)

    def _remember(self, server_round: int, arrays: ArrayRecord) -> None:
        """Keep what the reference checks of this round's replies need."""
        self._sent_round = server_round
        self._reference = {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in arrays.items()}

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample clients and build this round's train instructions."""
        if self.fraction_train == 0.0:
            return []
        node_ids = self._sample(grid, server_round, train=True)
        self._remember(server_round, arrays)
        train_config = self._train_config(config, server_round)
        stragglers: dict[int, int] = {}
        if self.stragglers > 0:
            stragglers = select_stragglers(
                node_ids,
                fraction=self.stragglers,
                max_steps=self.straggler_max_steps,
                seed=self.seed,
                server_round=server_round,
                key=region_order(grid),
            )
            log(
                INFO,
                "configure_train: %d straggler(s) this round (%s)",
                len(stragglers),
                "dropped" if self.drop_stragglers else "aggregated",
            )
        self._straggling = (server_round, stragglers)
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: train_config})
        messages = []
        for node in node_ids:
            content = record
            if node in stragglers:
                partial = ConfigRecord(dict(train_config.items()))
                partial[LOCAL_STEPS_KEY] = stragglers[node]
                content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: partial})
            messages.extend(self._construct_messages(content, [node], MessageType.TRAIN))
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample clients and build this round's evaluate instructions."""
        if self.fraction_evaluate == 0.0:
            return []
        node_ids = self._sample(grid, server_round, train=False)
        record = RecordDict(
            {
                self.arrayrecord_key: arrays,
                self.configrecord_key: self._round_config(config, server_round),
            }
        )
        return self._construct_messages(record, node_ids, MessageType.EVALUATE)

    # ---- replies ---------------------------------------------------------------

    def _label(self, msg: Message) -> str:
        """The client's region from the reply's meta record, else ``node <id>``."""
        node = msg.metadata.src_node_id
        if msg.has_content():
            meta = msg.content.get(META_KEY)
            if isinstance(meta, ConfigRecord) and isinstance(meta.get(REGION_KEY), str):
                self._regions[node] = str(meta[REGION_KEY])
        return self._regions.get(node, f"node {node}")

    def _record(
        self, into: list[dict[str, Any]], server_round: int, stage: str, msg: Message, reason: str
    ) -> None:
        label = self._label(msg)
        into.append(
            {
                "round": server_round,
                "stage": stage,
                "region": label,
                "node": msg.metadata.src_node_id,
                "reason": reason,
            }
        )
        kind = (
            "failed" if into is self.failures else "dropped" if into is self.dropped else "rejected"
        )
        log(WARNING, "%s round %d: %s %s: %s", stage, server_round, label, kind, reason)

    def _without_errors(
        self, server_round: int, replies: Iterable[Message], stage: str
    ) -> list[Message]:
        valid = []
        for msg in replies:
            if msg.has_error():
                reason = f"error reply (code {msg.error.code}): {msg.error.reason}"
                self._record(self.failures, server_round, stage, msg, reason)
            else:
                valid.append(msg)
        return valid

    def _without_stragglers(self, server_round: int, replies: list[Message]) -> list[Message]:
        """Drop (and record) straggler replies when ``drop_stragglers``."""
        sent_round, stragglers = self._straggling
        if not self.drop_stragglers or sent_round != server_round or not stragglers:
            return replies
        kept = []
        for msg in replies:
            node = msg.metadata.src_node_id
            if node in stragglers:
                reason = f"straggler ({LOCAL_STEPS_KEY} = {stragglers[node]}): update dropped"
                self._record(self.dropped, server_round, "train", msg, reason)
            else:
                kept.append(msg)
        return kept

    def _weight(self, content: RecordDict, label: str) -> float:
        metrics = content.get(METRICS_KEY)
        if not isinstance(metrics, MetricRecord):
            raise AggregationError(f"reply has no MetricRecord {METRICS_KEY!r}", client=label)
        if self.weighted_by_key not in metrics:
            raise AggregationError(
                f"MetricRecord {METRICS_KEY!r} has no {self.weighted_by_key!r}",
                client=label,
            )
        weight = check_weight(metrics[self.weighted_by_key], client=label)
        if weight > self.max_examples:
            raise InvalidWeightError(
                f"{self.weighted_by_key} = {weight:g} is absurd (max_examples = "
                f"{self.max_examples:g})",
                client=label,
            )
        return weight

    def _finite_layers(self, server_round: int) -> Iterable[str] | None:
        """Names that must be finite in replies (None: all)."""
        return None

    def _update_weight(
        self,
        server_round: int,
        content: RecordDict,
        label: str,
        arrays: dict[str, np.ndarray],
        weight: float,
    ) -> float | dict[str, float]:
        """The weight an accepted update is aggregated with (default: num-examples).

        Subclasses may return per-layer weights; a StrategyError rejects the reply.
        """
        return weight

    def _updates(
        self, server_round: int, replies: list[Message], accepted: list[RecordDict]
    ) -> Iterator[Update]:
        """Yield checked ``(region, arrays, weight)`` updates; record and skip bad ones."""
        finite = self._finite_layers(server_round)
        finite = None if finite is None else set(finite)
        for msg in replies:
            label = self._label(msg)
            try:
                weight = self._weight(msg.content, label)
                record = msg.content.get(self.arrayrecord_key)
                if not isinstance(record, ArrayRecord):
                    raise AggregationError(
                        f"reply has no ArrayRecord {self.arrayrecord_key!r}",
                        client=label,
                    )
                arrays = {name: array.numpy() for name, array in record.items()}
                if self._reference is None:
                    log(
                        WARNING,
                        "aggregate_train: no configure_train; checking against %s",
                        label,
                    )
                    self._reference = reference_of(arrays)
                check_update(arrays, self._reference, client=label, finite=finite)
                weight = self._update_weight(server_round, msg.content, label, arrays, weight)
            except (StrategyError, TypeError, ValueError) as exc:
                self._record(self.rejected, server_round, "train", msg, str(exc))
                continue
            accepted.append(msg.content)
            yield label, arrays, weight
            del arrays

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        return weighted_average(updates, reference=self._reference, validate=False)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Aggregate the accepted train replies; (None, None) if none was accepted."""
        replies = list(replies)
        valid = self._without_errors(server_round, replies, "train")
        valid = self._without_stragglers(server_round, valid)
        accepted: list[RecordDict] = []
        updates = self._updates(server_round, valid, accepted)
        first = next(updates, None)
        if first is None:
            log(
                WARNING,
                "aggregate_train round %d: no acceptable reply out of %d; weights unchanged",
                server_round,
                len(replies),
            )
            return None, None
        averaged = self._aggregate_arrays(server_round, itertools.chain([first], updates))
        arrays = ArrayRecord({name: Array(value) for name, value in averaged.items()})
        metrics = self.train_metrics_aggr_fn(accepted, self.weighted_by_key)
        log(
            INFO,
            "aggregate_train round %d: aggregated %d of %d replies",
            server_round,
            len(accepted),
            len(replies),
        )
        return arrays, metrics

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Aggregate the accepted evaluate replies' metrics; None if none was accepted."""
        replies = list(replies)
        accepted: list[RecordDict] = []
        for msg in self._without_errors(server_round, replies, "evaluate"):
            try:
                self._weight(msg.content, self._label(msg))
            except StrategyError as exc:
                self._record(self.rejected, server_round, "evaluate", msg, str(exc))
                continue
            accepted.append(msg.content)
        if not accepted:
            log(
                WARNING,
                "aggregate_evaluate round %d: no acceptable reply",
                server_round,
            )
            return None
        return self.evaluate_metrics_aggr_fn(accepted, self.weighted_by_key)
