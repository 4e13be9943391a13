"""Pure aggregation maths over named arrays.

An *update* is a ``(client_label, arrays, weight)`` triple, where ``arrays`` maps
Keras variable paths (``"dense/kernel"``) to NumPy arrays. The functions here
implement Federated Averaging (McMahan et al. 2017, "Communication-Efficient
Learning of Deep Networks from Decentralized Data") and its per-layer variants
(FedPer, Arivazhagan et al. 2019; FedBN, Li et al. 2021; per-layer aggregation
intervals, FedLAMA, Lee et al. 2023), including per-layer weights by a named
criterion (:data:`CRITERIA`, :func:`layer_weights`).

They stream: the iterable of updates is consumed once, and each layer has a
single accumulator updated in place, so memory does not grow with the number of
clients. Accumulation is in float32 for float32 (and narrower) inputs: measured
here, in-place float32 accumulation runs at memory bandwidth while a float64
conversion was 5x slower; a test bounds the error against a float64 reference.
Float64 inputs accumulate in float64, integer inputs in float64 and are rounded.

Float32 and float64 layers are accumulated with BLAS ``axpy`` (``y += a * x``,
one fused multiply-add per element, no temporary), single-threaded: numpy's
multiply-then-add reads every chunk twice more and rounds twice. Measured on
100 updates of a 10M-parameter model (CPU time against numpy reading the bytes
once): numpy's multiply-then-add 2.7x checked / 2.2x unchecked, ``axpy`` 1.6x /
1.3x (``experiments/benchmarks/speed.py``, section aggregation).

No Flower import here: these are plain functions over ``numpy`` arrays.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

from .errors import (
    DtypeMismatchError,
    InvalidParameterError,
    InvalidWeightError,
    KeyMismatchError,
    NonFiniteError,
    ShapeMismatchError,
    StrategyError,
    ZeroTotalWeightError,
)

__all__ = [
    "CRITERIA",
    "LOSS_FLOOR",
    "MODES",
    "Reference",
    "Update",
    "aggregate_layerwise",
    "check_count",
    "check_update",
    "check_weight",
    "criterion_weight",
    "layer_weights",
    "reference_of",
    "uniform_average",
    "weighted_average",
]

Reference = Mapping[str, tuple[tuple[int, ...], np.dtype]]
#: ``(client_label, arrays, weight)``; the weight is one number for every layer, or
#: (for :func:`aggregate_layerwise`) a ``{name: weight}`` mapping per weighted layer.
Update = tuple[str, Mapping[str, np.ndarray], float | Mapping[str, float]]

#: Per-layer aggregation modes understood by :func:`aggregate_layerwise`.
MODES = ("weighted", "uniform", "keep")

#: Named per-layer weighting criteria of "weighted" layers (see :func:`criterion_weight`).
CRITERIA = ("num-examples", "uniform", "inverse-loss", "update-norm")

#: Losses below this are treated as this value by the "inverse-loss" criterion.
LOSS_FLOOR = 1e-8

_MAX_LISTED = 5


def reference_of(
    arrays: Mapping[str, np.ndarray],
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Return the ``{name: (shape, dtype)}`` reference describing ``arrays``."""
    out = {}
    for name, value in arrays.items():
        value = np.asarray(value)
        out[name] = (tuple(value.shape), value.dtype)
    return out


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    more = len(names) - _MAX_LISTED
    return shown + (f" (and {more} more)" if more > 0 else "")


def check_update(
    arrays: Mapping[str, np.ndarray],
    reference: Reference,
    *,
    client: str,
    finite: Collection[str] | None = None,
) -> None:
    """Check one client's arrays against the reference names, shapes and dtypes.

    Args:
        arrays: the client's named arrays.
        reference: ``{name: (shape, dtype)}``, e.g. from :func:`reference_of`.
        client: label used in error messages (the client's region).
        finite: names whose values must be finite; default all of them.

    Raises:
        KeyMismatchError: missing or extra variable names.
        ShapeMismatchError: a shape differs from the reference.
        DtypeMismatchError: the dtype kind differs (e.g. int array for a float layer).
        NonFiniteError: NaN or infinite values.
    """
    missing = [name for name in reference if name not in arrays]
    if missing:
        raise KeyMismatchError(
            f"missing {len(missing)} variable(s): {_listed(missing)}",
            client=client,
            layer=missing[0],
        )
    extra = [name for name in arrays if name not in reference]
    if extra:
        raise KeyMismatchError(
            f"unexpected {len(extra)} variable(s): {_listed(extra)}",
            client=client,
            layer=extra[0],
        )
    for name, (shape, dtype) in reference.items():
        value = np.asarray(arrays[name])
        expected = np.dtype(dtype)
        if value.dtype.kind != expected.kind:
            raise DtypeMismatchError(
                f"expected dtype {expected.name} (kind {expected.kind!r}), "
                f"got {value.dtype.name} (kind {value.dtype.kind!r})",
                client=client,
                layer=name,
            )
        if value.shape != tuple(shape):
            raise ShapeMismatchError(
                f"expected shape {tuple(shape)}, got {value.shape}",
                client=client,
                layer=name,
            )
        checked = value.dtype.kind in "fc" and (finite is None or name in finite)
        if checked and not np.isfinite(value).all():
            nan = int(np.isnan(value).sum())
            inf = int(np.isinf(value).sum())
            raise NonFiniteError(
                f"{nan} NaN and {inf} infinite value(s) out of {value.size}",
                client=client,
                layer=name,
            )


def check_count(name: str, value: object) -> int:
    """Return ``value`` (the parameter ``name``: a client count, a seed) as an int >= 0.

    Raises:
        InvalidParameterError: not an int (a bool is not one), or negative.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise InvalidParameterError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def check_weight(weight: object, *, client: str, allow_zero: bool = False) -> float:
    """Return ``weight`` as a float after checking it is a finite positive number.

    With ``allow_zero=True`` a weight of exactly zero is accepted (the client then
    contributes nothing), which is what :func:`weighted_average` does.

    Raises:
        InvalidWeightError: non-numeric (including bool), non-finite, negative, or zero.
    """
    if isinstance(weight, bool | np.bool_) or not isinstance(weight, numbers.Real):
        raise InvalidWeightError(
            f"weight (num-examples) must be a number, got {type(weight).__name__} {weight!r}",
            client=client,
        )
    value = float(weight)
    if not math.isfinite(value):
        raise InvalidWeightError(
            f"weight (num-examples) must be finite, got {value}", client=client
        )
    if value < 0 or (value == 0 and not allow_zero):
        allowed = ">= 0" if allow_zero else "> 0"
        raise InvalidWeightError(
            f"weight (num-examples) must be {allowed}, got {weight!r}", client=client
        )
    return value


def _acc_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind == "f":
        return np.result_type(dtype, np.float32)
    if dtype.kind == "c":
        return np.result_type(dtype, np.complex64)
    return np.dtype(np.float64)


def _finish(acc: np.ndarray, divisor: float, dtype: np.dtype) -> np.ndarray:
    np.divide(acc, divisor, out=acc)
    if acc.dtype == dtype:
        return acc
    if dtype.kind in "iub":
        np.rint(acc, out=acc)
    return acc.astype(dtype)


@functools.cache
def _blas() -> tuple[dict, object]:
    """BLAS ``axpy`` by accumulator dtype, and a thread-pool controller. Imported on
    first use: scipy.linalg adds 0.4 s to every process start, aggregating or not."""
    from scipy.linalg.blas import daxpy, saxpy
    from threadpoolctl import ThreadpoolController

    return {np.dtype(np.float32): saxpy, np.dtype(np.float64): daxpy}, ThreadpoolController()


def _add_scaled(sink: np.ndarray, value: np.ndarray, factor: float, buf: np.ndarray | None) -> None:
    """``sink += factor * value`` in place (``sink`` contiguous, 1-D); BLAS ``axpy`` for
    same-dtype float32/float64 (one rounding), numpy multiply-then-add otherwise."""
    axpy = _blas()[0].get(sink.dtype) if value.dtype == sink.dtype else None
    if axpy is not None:
        axpy(value, sink, a=factor)  # writes into sink: a contiguous array of its dtype
    elif factor == 1.0:
        np.add(sink, value, out=sink)
    else:
        np.multiply(value, factor, out=buf)
        np.add(sink, buf, out=sink)


def _finite(part: np.ndarray) -> bool:
    """True if every value of ``part`` is finite. ``part . part`` is NaN or inf if
    any value is, so one cached read decides the common case; only then (or on an
    overflowing sum of squares) are the values looked at one by one."""
    if part.dtype.kind == "f" and math.isfinite(float(np.dot(part, part))):
        return True
    return bool(np.isfinite(part).all())


#: Updates accumulated together, chunk by chunk (see :func:`_stream`), at most
#: WINDOW of them and at most WINDOW_BYTES of their arrays (a large model goes
#: one update at a time). Measured on 20 updates of a 10M-parameter model
#: (CPU time): one at a time 3.9x numpy's read-once time, windows of 4 in 1 MiB
#: chunks 1.8x.
WINDOW = 4
WINDOW_BYTES = 256 << 20
#: Elements per chunk: a chunk of the accumulator and of the window's updates
#: stay in the CPU cache while they are combined.
CHUNK = 1 << 18


class _Pending:
    """One update waiting in the window: its arrays and per-layer factors."""

    __slots__ = ("arrays", "client", "factors", "skipped")

    def __init__(self, client: str, arrays: Mapping[str, np.ndarray]) -> None:
        self.client = client
        self.arrays = arrays
        self.factors: dict[str, float] = {}  # accumulated layers: name -> factor
        self.skipped: list[str] = []  # weighted layers with weight 0: checked, not added


def _first_bad(values: np.ndarray) -> bool:
    return values.dtype.kind in "fc" and not np.isfinite(values).all()


def _flush(
    window: list[_Pending],
    acc: dict[str, np.ndarray],
    tmp: dict[str, np.ndarray],
    finite: set[str],
    validate: bool,
) -> None:
    """Add the window's updates into the accumulators, chunk by chunk.

    For every chunk of every layer, the window's updates are added in their
    order, each as ``sink += factor * value`` (:func:`_add_scaled`), exactly as
    one update at a time would: the same operations on every element in the
    same order, so the result is bitwise the same whatever the blocking. The
    chunk of the accumulator stays in cache across the window, which saves a
    round trip to memory per update (measured: about 2x faster on 10M-parameter
    models). Finiteness is checked on the accumulated chunk; only if it is not
    finite are the window's values of that chunk searched for the culprit.
    """
    if not window:
        return
    with _blas()[1].limit(limits=1, user_api="blas"):  # threads cost more than they give here
        for name, sink in acc.items():
            _flush_layer(window, name, sink, tmp.get(name), validate and name in finite)
    window.clear()


def _flush_layer(
    window: list[_Pending], name: str, sink: np.ndarray, tmp: np.ndarray | None, check: bool
) -> None:
    contributions = [(p, p.factors[name]) for p in window if name in p.factors]
    flat_sink = sink.reshape(-1)
    values = [np.asarray(p.arrays[name]).reshape(-1) for p, _ in contributions]
    finite_sink = check and sink.dtype.kind in "fc"
    for lo in range(0, flat_sink.size, CHUNK):
        hi = min(lo + CHUNK, flat_sink.size)
        part = flat_sink[lo:hi]
        buf = None if tmp is None else tmp[: hi - lo]
        for (_, factor), value in zip(contributions, values, strict=True):
            _add_scaled(part, value[lo:hi], factor, buf)
        if finite_sink and not _finite(part):
            for (pending, _), value in zip(contributions, values, strict=True):
                if _first_bad(value[lo:hi]):
                    _raise_non_finite(pending, name, value)
    if check:
        for pending in window:
            if name in pending.skipped and _first_bad(np.asarray(pending.arrays[name])):
                _raise_non_finite(pending, name, np.asarray(pending.arrays[name]))


def _raise_non_finite(pending: _Pending, name: str, value: np.ndarray) -> None:
    nan = int(np.isnan(value).sum())
    inf = int(np.isinf(value).sum())
    raise NonFiniteError(
        f"{nan} NaN and {inf} infinite value(s) out of {value.size}",
        client=pending.client,
        layer=name,
    )


def _stream(
    updates: Iterable[Update],
    modes: Mapping[str, str],
    default: str,
    reference: Reference | None,
    keys: Sequence[str] | None,
    validate: bool,
    fallback: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Accumulate weighted and uniform layers in one pass; return averages by name.

    ``modes`` maps names to "weighted" / "uniform" / "keep"; names absent from it
    get ``default``. "keep" layers are validated (unless ``validate`` is False)
    except for finiteness, and not accumulated. An update's weight is a number
    (every weighted layer) or a ``{name: weight}`` mapping covering every weighted
    layer; totals are kept per layer.

    Weights enter relative to the first positive weight of each layer: the
    accumulator holds ``sum_k (w_k / w_1) x_k`` and is divided by
    ``sum_k w_k / w_1``. The first (or only) contributing update has factor
    exactly 1.0, so the FedAvg of one update is that update, bit for bit.

    Updates are consumed one at a time and added :data:`WINDOW` at a time, in
    cache-sized chunks (:func:`_flush`): memory is one accumulator (and one
    chunk of scratch) per layer plus at most WINDOW updates, whatever the
    number of clients. Errors are raised for the same update, and the same
    layer, as checking each update in turn would.

    When per-layer weights were given, a weighted layer whose total is 0 takes
    ``fallback[name]`` (if given); otherwise a zero total raises
    :class:`ZeroTotalWeightError`.
    """
    acc: dict[str, np.ndarray] = {}
    tmp: dict[str, np.ndarray] = {}
    mode_of: dict[str, str] = {}
    finite: set[str] = set()
    totals: dict[str, float] = {}  # sum of w_k / w_1 per layer
    first: dict[str, float] = {}  # w_1: the first positive weight per layer
    window: list[_Pending] = []
    limit = WINDOW
    count = 0
    mapped = False
    for client, arrays, weight in updates:
        per_layer = weight if isinstance(weight, Mapping) else None
        mapped = mapped or per_layer is not None
        try:
            w = (
                0.0
                if per_layer is not None
                else check_weight(weight, client=client, allow_zero=True)
            )
        except StrategyError:
            _flush(window, acc, tmp, finite, validate)  # earlier updates' errors come first
            raise
        if reference is None:
            names = list(arrays) if keys is None else list(keys)
            missing = [n for n in names if n not in arrays]
            if missing:
                raise KeyMismatchError(
                    f"missing {len(missing)} variable(s): {_listed(missing)}",
                    client=client,
                    layer=missing[0],
                )
            reference = reference_of({n: arrays[n] for n in names})
        if count == 0:
            for name, (shape, dtype) in reference.items():
                mode = modes.get(name, default)
                mode_of[name] = mode
                if mode != "keep":
                    finite.add(name)
                    acc[name] = np.zeros(shape, _acc_dtype(np.dtype(dtype)))
                    totals[name] = 0.0
                    if mode == "weighted":
                        tmp[name] = np.empty(min(acc[name].size, CHUNK), acc[name].dtype)
        pending = _Pending(client, arrays)
        try:
            if validate:  # names, shapes, dtypes now; finiteness while accumulating
                check_update(arrays, reference, client=client, finite=())
            for name in acc:
                if mode_of[name] == "uniform":
                    pending.factors[name] = 1.0
                    continue
                if per_layer is not None:
                    if name not in per_layer:
                        raise InvalidWeightError(
                            "no weight for this layer", client=client, layer=name
                        )
                    w = check_weight(per_layer[name], client=client, allow_zero=True)
                if w == 0.0:
                    pending.skipped.append(name)
                    continue
                pending.factors[name] = w / first.setdefault(name, w)
        except StrategyError:
            # Report what checking each update in turn would have reported first:
            # a non-finite value in an earlier update, or in an earlier layer of this one.
            _flush(window, acc, tmp, finite, validate)
            if validate:
                check_update(arrays, reference, client=client, finite=finite)
            raise
        for name, factor in pending.factors.items():
            totals[name] += factor
        window.append(pending)
        count += 1
        if count == 1:
            nbytes = sum(np.asarray(arrays[n]).nbytes for n in acc)
            limit = max(1, min(WINDOW, WINDOW_BYTES // max(nbytes, 1)))
        if len(window) >= limit:
            _flush(window, acc, tmp, finite, validate)
    _flush(window, acc, tmp, finite, validate)
    if count == 0:
        raise ZeroTotalWeightError("no updates to aggregate (total weight 0)")
    out: dict[str, np.ndarray] = {}
    for name, (_, dtype) in (reference or {}).items():
        if mode_of[name] == "keep":
            continue
        divisor = float(count) if mode_of[name] == "uniform" else totals[name]
        absolute = divisor * first.get(name, 0.0) if mode_of[name] != "uniform" else divisor
        if divisor <= 0 and mapped and fallback is not None and name in fallback:
            out[name] = np.array(fallback[name], dtype=dtype, copy=True)
            continue
        if divisor <= 0:
            raise ZeroTotalWeightError(
                f"total weight of {count} update(s) is {absolute:g}; it must be positive",
                layer=name,
            )
        out[name] = _finish(acc[name], divisor, np.dtype(dtype))
    return out


def weighted_average(
    updates: Iterable[Update],
    *,
    keys: Sequence[str] | None = None,
    reference: Reference | None = None,
    validate: bool = True,
) -> dict[str, np.ndarray]:
    """Example-weighted average of named arrays: FedAvg (McMahan et al. 2017).

    ``sum_k w_k * x_k / sum_k w_k`` per layer, streamed: the iterable is consumed
    once with one accumulator per layer (float32 for float32 inputs, in place;
    DESIGN decision 2). Output dtypes equal the reference dtypes.

    Args:
        updates: ``(client_label, arrays, weight)`` triples; weights must be
            finite and >= 0, and their total positive.
        keys: expected variable names (output order); default the first update's.
        reference: ``{name: (shape, dtype)}`` to validate against; default the
            first update (restricted to ``keys``).
        validate: set False only if every update was already checked with
            :func:`check_update` against the same reference.

    Raises:
        AggregationError subclasses naming the client and the layer.
    """
    return _stream(updates, {}, "weighted", reference, keys, validate)


def uniform_average(
    updates: Iterable[Update],
    *,
    keys: Sequence[str] | None = None,
    reference: Reference | None = None,
    validate: bool = True,
) -> dict[str, np.ndarray]:
    """Unweighted mean of named arrays (every client counts once).

    Same streaming and validation as :func:`weighted_average`; weights are still
    checked but not used.
    """
    return _stream(updates, {}, "uniform", reference, keys, validate)


def aggregate_layerwise(
    updates: Iterable[Update],
    *,
    current: Mapping[str, np.ndarray],
    plan: Mapping[str, str],
    validate: bool = True,
) -> dict[str, np.ndarray]:
    """Aggregate each layer with its own mode, in a single streaming pass.

    ``plan`` maps every name in ``current`` to "weighted" (FedAvg, McMahan et al.
    2017), "uniform", or "keep": the server keeps ``current``'s value, used for
    local layers (FedPer, Arivazhagan et al. 2019; FedBN, Li et al. 2021), frozen
    layers, and layers skipped by a per-layer interval (FedLAMA, Lee et al. 2023).
    Updates are validated against ``current``'s names, shapes and dtypes; "keep"
    layers are not checked for finiteness since they are not used.

    An update's weight may be a ``{name: weight}`` mapping (see
    :func:`layer_weights`) giving each "weighted" layer its own weight; a layer
    whose weights sum to 0 (e.g. "update-norm" when no client moved it) keeps
    ``current``'s value.

    Returns:
        ``{name: array}`` in ``current``'s order. "keep" entries are ``current``'s
        arrays themselves (not copies).
    """
    names = list(current)
    unplanned = [n for n in names if n not in plan]
    unknown = [n for n in plan if n not in current]
    if unplanned or unknown:
        raise StrategyError(
            f"plan does not match the current variables: unplanned {_listed(unplanned)}; "
            f"unknown {_listed(unknown)}"
        )
    bad = {n: m for n, m in plan.items() if m not in MODES}
    if bad:
        name, mode = next(iter(bad.items()))
        raise StrategyError(f"plan mode {mode!r} for {name!r} is not one of {MODES}")
    reference = reference_of(current)
    if all(plan[n] == "keep" for n in names):
        averaged: dict[str, np.ndarray] = {}
        for client, arrays, weight in updates:  # still validate and consume once
            for w in weight.values() if isinstance(weight, Mapping) else [weight]:
                check_weight(w, client=client, allow_zero=True)
            if validate:
                check_update(arrays, reference, client=client, finite=())
    else:
        averaged = _stream(updates, plan, "weighted", reference, None, validate, current)
    return {n: averaged[n] if plan[n] != "keep" else np.asarray(current[n]) for n in names}


def criterion_weight(
    criterion: str,
    *,
    client: str,
    num_examples: float,
    loss: object = None,
    update: np.ndarray | None = None,
    current: np.ndarray | None = None,
    layer: str | None = None,
) -> float:
    """One client's weight for one layer under a named criterion (:data:`CRITERIA`).

    - ``"num-examples"``: ``n_k``, as FedAvg (McMahan et al. 2017).
    - ``"uniform"``: ``1``: every client counts once.
    - ``"inverse-loss"``: ``n_k / max(loss_k, LOSS_FLOOR)``, with ``loss_k`` the
      client's reported training loss: clients whose local model fits their own
      data better count more for this layer.
    - ``"update-norm"``: ``n_k * ||x_k - x||_2``, the L2 norm of how far the client
      moved this layer from the round's global value ``current``: clients that
      learned most on this layer count most. It is not robust to outliers (an
      outlier moves far); use a robust rule for adversarial settings.

    Raises:
        InvalidWeightError: an unusable loss (non-numeric, non-finite, negative).
        StrategyError: an unknown criterion, or a missing ``update``/``current``.
    """
    n = check_weight(num_examples, client=client, allow_zero=True)
    if criterion == "num-examples":
        return n
    if criterion == "uniform":
        return 1.0
    if criterion == "inverse-loss":
        if (
            isinstance(loss, bool | np.bool_)
            or not isinstance(loss, numbers.Real)
            or not math.isfinite(float(loss))
            or float(loss) < 0
        ):
            raise InvalidWeightError(
                f"criterion 'inverse-loss' needs a finite training 'loss' >= 0, got {loss!r}",
                client=client,
                layer=layer,
            )
        return n / max(float(loss), LOSS_FLOOR)
    if criterion == "update-norm":
        if update is None or current is None:
            raise StrategyError("criterion 'update-norm' needs the update and the current value")
        diff = np.asarray(update, dtype=np.float64) - np.asarray(current, dtype=np.float64)
        return n * float(np.sqrt(np.vdot(diff, diff).real))
    raise StrategyError(f"unknown weighting criterion {criterion!r}; known: {', '.join(CRITERIA)}")


def layer_weights(
    criteria: Mapping[str, str],
    arrays: Mapping[str, np.ndarray],
    *,
    client: str,
    num_examples: float,
    loss: object = None,
    current: Mapping[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """``{name: weight}`` for every layer in ``criteria`` (see :func:`criterion_weight`).

    The result is an update weight for :func:`aggregate_layerwise`.
    """
    return {
        name: criterion_weight(
            criterion,
            client=client,
            num_examples=num_examples,
            loss=loss,
            update=arrays.get(name),
            current=None if current is None else current.get(name),
            layer=name,
        )
        for name, criterion in criteria.items()
    }
