"""Server optimizers over named arrays (pure NumPy): FedAvgM and FedOpt.

The server treats the round's FedAvg result as a step: the pseudo-gradient is
``delta = averaged - current`` (per layer), and a server optimizer turns it into
the new global weights.

- :func:`momentum_step`: FedAvgM, server SGD with momentum (Hsu et al. 2019,
  "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
  Classification"): ``v = momentum * v + delta``, ``x = x + lr * v``.
- :func:`adaptive_step`: FedAdagrad, FedAdam, FedYogi (Reddi et al. 2021,
  "Adaptive Federated Optimization", Algorithm 2)::

      m = beta_1 * m + (1 - beta_1) * delta
      adagrad: v = v + delta**2
      adam:    v = beta_2 * v + (1 - beta_2) * delta**2
      yogi:    v = v - (1 - beta_2) * delta**2 * sign(v - delta**2)
      x = x + eta * m / (sqrt(v) + tau)

  with ``m = 0`` and ``v = initial_accumulator`` (the paper's ``v_{-1} >= tau**2``)
  before the first round; no bias correction, as in the paper.

The optimizer state is explicit (``{name: array}`` dicts the caller keeps and
passes back), so a strategy can save and restore it. Float layers are updated
in their own precision (float32 stays float32); integer and boolean layers take
the averaged value unchanged, with no optimizer state. Every function returns
new arrays and never modifies its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .errors import InvalidParameterError, StrategyError

__all__ = ["ADAPTIVE", "adaptive_step", "momentum_step", "pseudo_gradient"]

#: Adaptive server optimizers of :func:`adaptive_step`.
ADAPTIVE = ("adagrad", "adam", "yogi")

Arrays = Mapping[str, np.ndarray]


def _optimised(value: np.ndarray) -> bool:
    return np.asarray(value).dtype.kind in "fc"


def pseudo_gradient(current: Arrays, averaged: Arrays) -> dict[str, np.ndarray]:
    """``averaged - current`` for every float layer (the others are left out).

    Raises:
        StrategyError: the two do not have the same names and shapes.
    """
    if list(current) != list(averaged):
        missing = sorted(set(current) ^ set(averaged))[:5]
        raise StrategyError(f"averaged and current arrays differ in names: {missing}")
    out = {}
    for name, x in current.items():
        x = np.asarray(x)
        a = np.asarray(averaged[name])
        if a.shape != x.shape:
            raise StrategyError(f"layer {name!r}: averaged shape {a.shape} != current {x.shape}")
        if _optimised(x):
            out[name] = a.astype(x.dtype, copy=False) - x
    return out


def _state_like(
    state: Arrays | None, delta: Mapping[str, np.ndarray], fill: float, what: str
) -> dict[str, np.ndarray]:
    if state is None:
        return {name: np.full_like(d, fill) for name, d in delta.items()}
    out = {}
    for name, d in delta.items():
        if name not in state:
            raise StrategyError(f"server optimizer state {what!r} has no layer {name!r}")
        value = np.asarray(state[name])
        if value.shape != d.shape:
            raise StrategyError(
                f"server optimizer state {what!r}, layer {name!r}: shape {value.shape}, "
                f"expected {d.shape}"
            )
        out[name] = value.astype(d.dtype, copy=True)
    return out


def _apply(
    current: Arrays, averaged: Arrays, steps: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    out = {}
    for name, x in current.items():
        if name in steps:
            out[name] = np.asarray(x) + steps[name]
        else:
            out[name] = np.array(averaged[name], copy=True)
    return out


def momentum_step(
    current: Arrays,
    averaged: Arrays,
    velocity: Arrays | None,
    *,
    lr: float,
    momentum: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """One FedAvgM server step (Hsu et al. 2019).

    Returns ``(new_arrays, new_velocity)``. With ``lr = 1`` and ``momentum = 0``
    this is FedAvg: the averaged arrays are returned exactly (copies) and the
    velocity stays ``None``.
    """
    if lr == 1.0 and momentum == 0.0:
        return {name: np.array(a, copy=True) for name, a in averaged.items()}, None
    delta = pseudo_gradient(current, averaged)
    v = _state_like(velocity, delta, 0.0, "velocity")
    for name, d in delta.items():
        v[name] *= v[name].dtype.type(momentum)
        v[name] += d
    steps = {name: v[name] * v[name].dtype.type(lr) for name in delta}
    return _apply(current, averaged, steps), v


def adaptive_step(
    kind: str,
    current: Arrays,
    averaged: Arrays,
    m: Arrays | None,
    v: Arrays | None,
    *,
    eta: float,
    beta_1: float,
    beta_2: float,
    tau: float,
    initial_accumulator: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One FedAdagrad / FedAdam / FedYogi server step (Reddi et al. 2021, Algorithm 2).

    ``m`` and ``v`` are the previous moments (``None`` before the first round:
    ``m = 0``, ``v = initial_accumulator``). ``beta_2`` is unused by adagrad.

    Returns ``(new_arrays, new_m, new_v)``.
    """
    if kind not in ADAPTIVE:
        raise InvalidParameterError(f"server optimizer must be one of {ADAPTIVE}, got {kind!r}")
    delta = pseudo_gradient(current, averaged)
    m_new = _state_like(m, delta, 0.0, "m")
    v_new = _state_like(v, delta, initial_accumulator, "v")
    steps = {}
    for name, d in delta.items():
        t = d.dtype.type
        mm, vv = m_new[name], v_new[name]
        mm *= t(beta_1)
        mm += t(1.0 - beta_1) * d
        d2 = d * d
        if kind == "adagrad":
            vv += d2
        elif kind == "adam":
            vv *= t(beta_2)
            vv += t(1.0 - beta_2) * d2
        else:  # yogi
            vv -= t(1.0 - beta_2) * d2 * np.sign(vv - d2)
        steps[name] = t(eta) * mm / (np.sqrt(vv) + t(tau))
    return _apply(current, averaged, steps), m_new, v_new
