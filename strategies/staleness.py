"""Pure maths of asynchronous aggregation: staleness functions and server steps.

An update's *staleness* ``s`` is the number of server steps between the step
that sent a client the global model and the step that aggregates the client's
reply (0: the model it trained from is the current one).

- FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous
  Aggregation", AISTATS, https://arxiv.org/abs/2106.06639): the server buffers
  K client deltas ``y_i - b_i`` (the trained model minus the model the client
  received), each scaled by ``1 / sqrt(1 + s_i)``, and steps
  ``x <- x + lr * mean(scaled deltas)`` (:func:`buffered_step`).
- FedAsync (Xie et al. 2019, "Asynchronous Federated Optimization",
  https://arxiv.org/abs/1903.03934): each arrival is mixed into the global
  model, ``x <- (1 - a_t) x + a_t y`` with ``a_t = alpha * S(s)`` and ``S``
  constant, polynomial or hinge (:func:`fedasync_weight`, :func:`mix`).

Arrays are named (``{variable path: ndarray}``); results keep each array's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from .errors import AggregationError, InvalidParameterError

__all__ = [
    "STALENESS_FUNCTIONS",
    "buffered_step",
    "fedasync_weight",
    "fedbuff_weight",
    "mix",
]

STALENESS_FUNCTIONS = ("constant", "polynomial", "hinge")

Arrays = Mapping[str, np.ndarray]


def _staleness(s: int) -> int:
    if isinstance(s, bool) or int(s) != s or s < 0:
        raise InvalidParameterError(f"staleness must be an int >= 0, got {s!r}")
    return int(s)


def fedbuff_weight(s: int) -> float:
    """FedBuff's staleness scaling ``1 / sqrt(1 + s)`` (Nguyen et al. 2022, section 4)."""
    return 1.0 / math.sqrt(1.0 + _staleness(s))


def fedasync_weight(s: int, function: str = "polynomial", *, a: float = 0.5, b: int = 4) -> float:
    """FedAsync's staleness function ``S(s)`` (Xie et al. 2019, section 5.2).

    - ``constant``: ``1``;
    - ``polynomial``: ``(s + 1) ** -a``;
    - ``hinge``: ``1`` if ``s <= b``, else ``1 / (a * (s - b) + 1)``.
    """
    s = _staleness(s)
    if function == "constant":
        return 1.0
    if function == "polynomial":
        return float((s + 1.0) ** -a)
    if function == "hinge":
        return 1.0 if s <= b else 1.0 / (a * (s - b) + 1.0)
    raise InvalidParameterError(
        f"staleness function must be one of {', '.join(STALENESS_FUNCTIONS)}, got {function!r}"
    )


def buffered_step(
    current: Arrays,
    updates: Iterable[tuple[str, Arrays, Arrays, float, float]],
    *,
    server_lr: float = 1.0,
) -> dict[str, np.ndarray]:
    """One FedBuff server step: ``x + lr * sum(n_i w_i (y_i - b_i)) / sum(n_i)``.

    ``updates`` yields ``(client, y_i, b_i, n_i, w_i)``: the client's label,
    its trained arrays, the arrays it was sent (its base), its weight ``n_i``
    (examples, or 1 for the paper's plain mean over the buffer) and its
    staleness scaling ``w_i``. The sum is divided by ``sum(n_i)``, not by
    ``sum(n_i w_i)``, so staleness shrinks the step. With one base equal to
    ``current``, ``w_i = 1`` and ``lr = 1`` this is the ``n``-weighted
    average of the ``y_i``: FedAvg.

    Accumulates in float64 and casts back to each array's dtype.

    Raises:
        AggregationError: no update, a non-positive total weight, or names or
            shapes that differ from ``current`` (naming the client and layer).
    """
    sums = {k: np.zeros(np.shape(v), dtype=np.float64) for k, v in current.items()}
    total = 0.0
    count = 0
    for client, trained, base, n, w in updates:
        for name, acc in sums.items():
            if name not in trained or name not in base:
                raise AggregationError(f"update has no array {name!r}", client=client)
            y = np.asarray(trained[name], dtype=np.float64)
            b = np.asarray(base[name], dtype=np.float64)
            if y.shape != acc.shape or b.shape != acc.shape:
                raise AggregationError(
                    f"shape {y.shape} (base {b.shape}) != {acc.shape}", client=client, layer=name
                )
            acc += (float(n) * float(w)) * (y - b)
        total += float(n)
        count += 1
    if count == 0:
        raise AggregationError("no update to aggregate")
    if not total > 0:
        raise AggregationError(f"total weight {total:g} is not positive")
    return {
        name: (np.asarray(current[name], dtype=np.float64) + server_lr * acc / total).astype(
            np.asarray(current[name]).dtype
        )
        for name, acc in sums.items()
    }


def mix(
    current: Arrays, trained: Arrays, alpha: float, *, client: str = ""
) -> dict[str, np.ndarray]:
    """FedAsync's update ``(1 - alpha) x + alpha y``, array by array, in float64."""
    if not 0.0 <= alpha <= 1.0:
        raise InvalidParameterError(f"mixing weight must be in [0, 1], got {alpha!r}")
    out = {}
    for name, x in current.items():
        if name not in trained:
            raise AggregationError(f"update has no array {name!r}", client=client or None)
        x64 = np.asarray(x, dtype=np.float64)
        y64 = np.asarray(trained[name], dtype=np.float64)
        if y64.shape != x64.shape:
            raise AggregationError(
                f"shape {y64.shape} != {x64.shape}", client=client or None, layer=name
            )
        out[name] = ((1.0 - alpha) * x64 + alpha * y64).astype(np.asarray(x).dtype)
    return out
