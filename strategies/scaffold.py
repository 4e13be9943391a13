"""SCAFFOLD: stochastic controlled averaging, with control variates against client drift.

Karimireddy, Kale, Mohri, Reddi, Stich and Suresh 2020, "SCAFFOLD: Stochastic
Controlled Averaging for Federated Learning" (ICML, https://arxiv.org/abs/1910.06378),
Algorithm 1 with option II:

- the server keeps a control variate ``c`` and sends it with the weights
  ``x`` (train message record :data:`CONTROL_KEY`);
- region i keeps its own ``c_i`` (in its ClientApp state, checkpointed with
  the run; never sent) and takes ``K`` local steps ``y <- y - lr (g(y) - c_i + c)``;
- it then sets ``c_i+ = c_i - c + (x - y) / (K lr)`` and sends ``y`` and only
  ``Delta c_i = c_i+ - c_i`` (reply record :data:`DELTA_KEY`);
- the server steps ``x <- x + lr_g (avg(y) - x)`` and ``c <- c + sum_i Delta c_i / N``
  with ``N`` the regions connected this round.

``avg(y)`` is FedAvg's example-weighted average (the paper's is uniform, the
same when regions hold equal rows), so with zero control variates (round 1)
and ``server_learning_rate = 1`` a round of SCAFFOLD is FedAvg's, bit for bit.
The control variates cover the trainable variables (those the clients report);
an absent name is a zero. ``c`` is in :meth:`Scaffold.state_dict`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from .aggregate import Update
from .client_metrics import LOCAL_STEPS, REPORT_KEY
from .errors import AggregationError, InvalidParameterError, StrategyError
from .fedavg import FedAvg

__all__ = ["CONTROL_KEY", "DELTA_KEY", "Scaffold"]

#: Train message record: the server control variate ``c`` (ArrayRecord by variable).
CONTROL_KEY = "scaffold-control"
#: Train reply record: the region's ``Delta c_i`` (ArrayRecord by variable).
DELTA_KEY = "scaffold-delta"


def _arrays(value: object, what: str) -> dict[str, np.ndarray] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise StrategyError(f"state {what!r} must be a dict of arrays or None")
    return {str(k): np.array(v, copy=True) for k, v in value.items()}


class Scaffold(FedAvg):
    """SCAFFOLD (Karimireddy et al. 2020): control variates correct the local drift.

    Args:
        server_learning_rate: the server step ``lr_g > 0`` on ``avg(y) - x`` (1: FedAvg's).
        **kwargs: the other :class:`~strategies.fedavg.FedAvg` parameters.

    Attributes:
        control: the server control variate ``c`` by variable name, None before
            the first aggregation (zero).
    """

    def __init__(self, *, server_learning_rate: float = 1.0, **kwargs: Any) -> None:
        if (
            isinstance(server_learning_rate, bool)
            or not isinstance(server_learning_rate, numbers.Real)
            or not math.isfinite(float(server_learning_rate))
            or server_learning_rate <= 0
        ):
            raise InvalidParameterError(
                f"server_learning_rate must be a finite number > 0, got {server_learning_rate!r}"
            )
        super().__init__(**kwargs)
        self.server_learning_rate = float(server_learning_rate)
        self._params["server_learning_rate"] = server_learning_rate
        self.control: dict[str, np.ndarray] | None = None
        self._current: dict[str, np.ndarray] | None = None
        self._connected = 0
        self._accepted = 0
        self._delta_sum: dict[str, np.ndarray] = {}

    def summary(self) -> None:
        """Log the strategy's configuration."""
        log(INFO, "\t├──> SCAFFOLD: server learning rate %g", self.server_learning_rate)
        super().summary()

    # ---- state -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """FedAvg's state plus ``"control"`` (``c`` by name, or None)."""
        state = super().state_dict()
        state["control"] = _arrays(self.control, "control")
        return state

    def _load_state(self, state: dict[str, Any]) -> None:
        super()._load_state(state)
        self.control = _arrays(state["control"], "control")

    # ---- configure -------------------------------------------------------------

    def _remember(self, server_round: int, arrays: ArrayRecord) -> None:
        super()._remember(server_round, arrays)
        self._current = {name: array.numpy() for name, array in arrays.items()}

    def _train_config(self, config: ConfigRecord, server_round: int) -> ConfigRecord:
        out = super()._train_config(config, server_round)
        out[REPORT_KEY] = [LOCAL_STEPS]  # K of option II (the client uses it, the server checks)
        return out

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """As FedAvg, each message carrying ``c`` (record ``scaffold-control``)."""
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._connected = len(list(grid.get_node_ids()))
        control = ArrayRecord(
            {name: Array(np.asarray(value)) for name, value in (self.control or {}).items()}
        )
        for msg in messages:
            msg.content[CONTROL_KEY] = control
        return messages

    # ---- replies ---------------------------------------------------------------

    def _check_delta(self, content: RecordDict, label: str) -> dict[str, np.ndarray]:
        record = content.get(DELTA_KEY)
        if not isinstance(record, ArrayRecord):
            raise AggregationError(
                f"reply has no ArrayRecord {DELTA_KEY!r} (SCAFFOLD's Delta c_i)", client=label
            )
        delta = {name: array.numpy() for name, array in record.items()}
        reference = self._reference or {}
        expected = set(self.control) if self.control is not None else None
        if not delta or (expected is not None and set(delta) != expected):
            raise AggregationError(
                f"{DELTA_KEY!r} names {sorted(delta)[:5]} are not the control variate's "
                f"{sorted(expected or [])[:5]}",
                client=label,
            )
        for name, value in delta.items():
            if name not in reference:
                raise AggregationError(f"{DELTA_KEY!r} names no model variable", client=label)
            shape, _ = reference[name]
            if tuple(value.shape) != tuple(shape) or value.dtype.kind != "f":
                raise AggregationError(
                    f"{DELTA_KEY!r}: {value.dtype.name} {tuple(value.shape)}, expected a float "
                    f"array of shape {tuple(shape)}",
                    client=label,
                    layer=name,
                )
            if not np.isfinite(value).all():
                raise AggregationError(f"{DELTA_KEY!r} is not finite", client=label, layer=name)
        return delta

    def _update_weight(
        self,
        server_round: int,
        content: RecordDict,
        label: str,
        arrays: dict[str, np.ndarray],
        weight: float,
    ) -> float:
        delta = self._check_delta(content, label)  # last check: the reply is accepted
        for name, value in delta.items():
            if name in self._delta_sum:
                self._delta_sum[name] += value.astype(np.float64)
            else:
                self._delta_sum[name] = value.astype(np.float64)
        self._accepted += 1
        return weight

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """As FedAvg; then ``c`` takes the accepted regions' ``Delta c_i``."""
        self._delta_sum = {}
        self._accepted = 0
        return super().aggregate_train(server_round, replies)

    def _aggregate_arrays(
        self, server_round: int, updates: Iterable[Update]
    ) -> dict[str, np.ndarray]:
        averaged = super()._aggregate_arrays(server_round, updates)
        if self._current is None:
            raise StrategyError("Scaffold: aggregate_train before configure_train")
        out = averaged
        if self.server_learning_rate != 1.0:
            out = {}
            for name, avg in averaged.items():
                if avg.dtype.kind != "f":
                    out[name] = avg
                    continue
                x = np.asarray(self._current[name], np.float64)
                step = x + self.server_learning_rate * (np.asarray(avg, np.float64) - x)
                out[name] = step.astype(avg.dtype)
        connected = max(self._connected, self._accepted, 1)
        control = {}
        for name, total in self._delta_sum.items():
            dtype = self._reference[name][1] if self._reference else np.float32
            old = 0.0 if self.control is None else np.asarray(self.control[name], np.float64)
            control[name] = (old + total / connected).astype(dtype)
        self.control = control
        return out
