"""Byzantine-robust aggregation rules over named arrays (pure NumPy).

- :func:`coordinate_median`: coordinate-wise median (Yin et al. 2018,
  "Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates").
- :func:`trimmed_mean`: coordinate-wise trimmed mean, same paper.
- :func:`multikrum`: Krum and Multi-Krum (Blanchard et al. 2017, "Machine Learning
  with Adversaries: Byzantine Tolerant Gradient Descent").
- :func:`bulyan`: Bulyan (El Mhamdi et al. 2018, "The Hidden Vulnerability of
  Distributed Learning in Byzantium").

Unlike FedAvg these rules cannot stream: a median, a trimmed mean or a pairwise
distance needs every client's value at once. They hold all accepted updates of
the round, so memory is O(clients x model), plus one stacked copy of the layer
being reduced (O(clients x layer)).

Updates are ``(client_label, arrays, weight)`` triples, as in
:mod:`strategies.aggregate`; they are checked against the reference (names,
shapes, dtypes, finiteness) unless ``validate=False``. Outputs keep the
reference's dtypes (integer layers are rounded back).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from .aggregate import Reference, Update, check_update, check_weight, reference_of
from .errors import InvalidParameterError, PreconditionError, ZeroTotalWeightError

__all__ = [
    "ROBUST_RULES",
    "bulyan",
    "check_clients",
    "collect",
    "coordinate_median",
    "krum_scores",
    "min_clients",
    "multikrum",
    "pairwise_sq_distances",
    "trimmed_mean",
]

#: Rules whose preconditions :func:`min_clients` knows.
ROBUST_RULES = ("fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")

_CONDITIONS = {
    "krum": ("n >= 2f + 3", lambda f: 2 * f + 3),
    "multikrum": ("n >= 2f + 3", lambda f: 2 * f + 3),
    "bulyan": ("n >= 4f + 3", lambda f: 4 * f + 3),
    "fedmedian": ("n >= 1", lambda f: 1),
    "fedtrimmedavg": ("n >= 1", lambda f: 1),
}


def min_clients(rule: str, f: int) -> int:
    """Smallest number of clients ``rule`` accepts with ``f`` malicious ones.

    Krum and Multi-Krum need ``n >= 2f + 3`` (Blanchard et al. 2017: ``n > 2f + 2``);
    Bulyan needs ``n >= 4f + 3`` (El Mhamdi et al. 2018); the median and the
    trimmed mean need one client.
    """
    if rule not in _CONDITIONS:
        raise InvalidParameterError(f"unknown robust rule {rule!r}; known: {ROBUST_RULES}")
    return _CONDITIONS[rule][1](f)


def check_clients(rule: str, n: int, f: int, *, where: str) -> None:
    """Raise :class:`PreconditionError` unless ``n >= min_clients(rule, f)``.

    ``where`` says what ``n`` counts, e.g. ``"(min_train_clients)"`` or
    ``"accepted replies in round 3"``.
    """
    required = min_clients(rule, f)
    if n < required:
        condition = _CONDITIONS[rule][0]
        raise PreconditionError(rule, n=n, f=f, required=required, condition=condition, where=where)


def collect(
    updates: Iterable[Update],
    *,
    reference: Reference | None = None,
    validate: bool = True,
) -> tuple[list[Update], Reference]:
    """Materialise the updates (the robust rules need all of them) after checking them.

    Returns ``(updates, reference)``; the reference defaults to the first update's.
    Weights are checked (finite, >= 0) but a zero weight is allowed here.
    """
    out: list[Update] = []
    for client, arrays, weight in updates:
        check_weight(weight, client=client, allow_zero=True)
        if reference is None:
            reference = reference_of(arrays)
        if validate:
            check_update(arrays, reference, client=client)
        out.append((client, arrays, weight))
    if not out or reference is None:
        raise ZeroTotalWeightError("no updates to aggregate")
    return out, reference


def _cast(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        value = np.rint(value)
    return np.asarray(value).astype(dtype, copy=False)


def _stack(updates: Sequence[Update], name: str) -> np.ndarray:
    return np.stack([np.asarray(arrays[name]) for _, arrays, _ in updates])


def _work_dtype(dtype: np.dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype if dtype.kind in "fc" else np.dtype(np.float64)


def coordinate_median(
    updates: Iterable[Update],
    *,
    reference: Reference | None = None,
    validate: bool = True,
) -> dict[str, np.ndarray]:
    """Coordinate-wise median of the clients' arrays (Yin et al. 2018).

    Unweighted: every client counts once. With an even number of clients the
    median of a coordinate is the mean of its two middle values (``np.median``).
    Tolerates fewer than half of the clients being arbitrary.
    """
    items, reference = collect(updates, reference=reference, validate=validate)
    out = {}
    for name, (_, dtype) in reference.items():
        stack = _stack(items, name).astype(_work_dtype(dtype), copy=False)
        out[name] = _cast(np.median(stack, axis=0), dtype)
    return out


def trimmed_mean(
    updates: Iterable[Update],
    *,
    beta: float,
    reference: Reference | None = None,
    validate: bool = True,
) -> dict[str, np.ndarray]:
    """Coordinate-wise beta-trimmed mean (Yin et al. 2018).

    For each coordinate, drop the ``k = floor(beta * n)`` largest and ``k``
    smallest client values and average the remaining ``n - 2k`` (unweighted).
    ``beta = 0`` is the uniform mean. Tolerates up to ``k`` arbitrary clients.

    Raises:
        InvalidParameterError: ``beta`` not in ``[0, 0.5)``.
    """
    if not 0.0 <= beta < 0.5:
        raise InvalidParameterError(f"fedtrimmedavg: beta must be in [0, 0.5), got {beta!r}")
    items, reference = collect(updates, reference=reference, validate=validate)
    n = len(items)
    k = int(np.floor(beta * n))
    out = {}
    for name, (_, dtype) in reference.items():
        stack = np.sort(_stack(items, name).astype(_work_dtype(dtype), copy=False), axis=0)
        kept = stack[k : n - k]
        out[name] = _cast(kept.mean(axis=0, dtype=np.result_type(kept.dtype, np.float32)), dtype)
    return out


def pairwise_sq_distances(updates: Sequence[Update], reference: Reference) -> np.ndarray:
    """``(n, n)`` squared L2 distances between the clients' whole models (float64).

    Computed layer by layer from differences (not the Gram identity, which loses
    precision when the models are close), so memory is O(clients x layer).
    """
    n = len(updates)
    dist = np.zeros((n, n), np.float64)
    for name in reference:
        flat = _stack(updates, name).reshape(n, -1).astype(np.float64)
        for i in range(n - 1):
            diff = flat[i + 1 :] - flat[i]
            d = np.einsum("ij,ij->i", diff, diff)
            dist[i, i + 1 :] += d
            dist[i + 1 :, i] += d
    return dist


def krum_scores(dist: np.ndarray, f: int, members: Sequence[int] | None = None) -> np.ndarray:
    """Krum scores (Blanchard et al. 2017) of ``members`` (default: all) among themselves.

    The score of client ``i`` is the sum of its squared distances to its
    ``n - f - 2`` nearest other members (clipped to ``[0, n - 1]``); the honest
    majority makes a low score.
    """
    idx = np.arange(len(dist)) if members is None else np.asarray(members)
    n = len(idx)
    k = min(max(n - f - 2, 0), n - 1)
    sub = dist[np.ix_(idx, idx)]
    scores = np.empty(n, np.float64)
    for row in range(n):
        others = np.delete(sub[row], row)
        scores[row] = np.sort(others)[:k].sum()
    return scores


def _weighted_mean(
    items: Sequence[Update], reference: Reference, chosen: Sequence[int]
) -> dict[str, np.ndarray]:
    weights = np.array([float(items[i][2]) for i in chosen], np.float64)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)  # every selected client claimed 0 examples
    out = {}
    for name, (_, dtype) in reference.items():
        work = np.result_type(_work_dtype(dtype), np.float32)
        acc = np.zeros(reference[name][0], work)
        for w, i in zip(weights, chosen, strict=True):
            acc += np.asarray(items[i][1][name], dtype=work) * work.type(w)
        out[name] = _cast(acc / work.type(weights.sum()), dtype)
    return out


def multikrum(
    updates: Iterable[Update],
    *,
    f: int,
    m: int | None = None,
    reference: Reference | None = None,
    validate: bool = True,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Multi-Krum (Blanchard et al. 2017); Krum is ``m = 1``.

    Scores every client with :func:`krum_scores`, selects the ``m`` lowest scores
    (ties broken by reply order) and averages the selected arrays weighted by
    their example counts, as FedAvg does (Blanchard et al. average uniformly;
    equal counts give the same). ``m = None`` selects ``n - f``.

    Returns:
        ``(arrays, selected client labels)``.

    Raises:
        PreconditionError: ``n < 2f + 3``.
        InvalidParameterError: ``m`` not in ``[1, n]``.
    """
    items, reference = collect(updates, reference=reference, validate=validate)
    n = len(items)
    rule = "krum" if m == 1 else "multikrum"
    check_clients(rule, n, f, where="accepted replies")
    m = n - f if m is None else m
    if not 1 <= m <= n:
        raise InvalidParameterError(f"{rule}: num_selected must be in [1, n = {n}], got {m}")
    scores = krum_scores(pairwise_sq_distances(items, reference), f)
    chosen = sorted(np.argsort(scores, kind="stable")[:m].tolist())
    return _weighted_mean(items, reference, chosen), [items[i][0] for i in chosen]


def bulyan(
    updates: Iterable[Update],
    *,
    f: int,
    reference: Reference | None = None,
    validate: bool = True,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Bulyan (El Mhamdi et al. 2018) over Krum.

    1. Select ``theta = n - 2f`` clients by applying Krum recursively: pick the
       lowest Krum score among the remaining clients, move it to the selection,
       repeat.
    2. Per coordinate, average the ``beta = theta - 2f`` selected values closest
       to the selection's coordinate-wise median (unweighted).

    Returns:
        ``(arrays, selected client labels)``.

    Raises:
        PreconditionError: ``n < 4f + 3``.
    """
    items, reference = collect(updates, reference=reference, validate=validate)
    n = len(items)
    check_clients("bulyan", n, f, where="accepted replies")
    theta = n - 2 * f
    beta = theta - 2 * f
    dist = pairwise_sq_distances(items, reference)
    remaining = list(range(n))
    chosen: list[int] = []
    while len(chosen) < theta:
        scores = krum_scores(dist, f, remaining)
        pick = remaining[int(np.argmin(scores))]
        chosen.append(pick)
        remaining.remove(pick)
    selected = [items[i] for i in sorted(chosen)]
    out = {}
    for name, (_, dtype) in reference.items():
        stack = _stack(selected, name).astype(_work_dtype(dtype), copy=False)
        median = np.median(stack, axis=0)
        order = np.argsort(np.abs(stack - median), axis=0, kind="stable")[:beta]
        closest = np.take_along_axis(stack, order, axis=0)
        out[name] = _cast(
            closest.mean(axis=0, dtype=np.result_type(stack.dtype, np.float32)), dtype
        )
    return out, [label for label, _, _ in selected]
