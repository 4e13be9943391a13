"""FedProx Synthetic(alpha, beta) data (Li et al. 2020).

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith. "Federated Optimization in
Heterogeneous Networks", MLSys 2020, Section 5.1 and Appendix C.1; the
generator follows their ``data/synthetic_*/generate_synthetic.py`` and
``data/synthetic_iid/generate_iid.py`` draw for draw in structure:

- 60 features, 10 classes, ``num_devices`` devices (30 in the paper);
- samples per device: ``int(lognormal(4, 2)) + 50`` (a power law);
- device k: ``u_k ~ N(0, alpha)``, ``B_k ~ N(0, beta)``,
  ``W_k ~ N(u_k, 1)`` (60 x 10), ``b_k ~ N(u_k, 1)`` (10),
  ``v_k ~ N(B_k, 1)`` (60), ``x ~ N(v_k, Sigma)`` with diagonal
  ``Sigma_jj = j^(-1.2)`` (j = 1..60), and ``y = argmax(softmax(x W_k + b_k))``;
- IID variant (``synthetic_iid = true``): one ``W, b ~ N(0, 1)`` for all
  devices and ``x ~ N(0, Sigma)``.

On ``N(0, alpha)``: the paper writes the second argument as a variance, but
the authors' code calls ``np.random.normal(0, alpha)``, whose second argument
is the standard deviation. We follow the code, i.e. ``alpha`` and ``beta``
are standard deviations, so that Synthetic(0.5, 0.5) here is the data set of
the paper's experiments. Randomness comes from ``np.random.default_rng(seed)``
(not the global NumPy state), so the data is a pure function of the
arguments; x is drawn as ``v_k + sqrt(diag Sigma) * N(0, 1)``, equal in
distribution to the authors' ``multivariate_normal`` call.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd

__all__ = ["DEVICE_COLUMN", "DIMENSION", "NUM_CLASSES", "TARGET", "device_names", "fedprox_table"]

DIMENSION = 60
NUM_CLASSES = 10
DEVICE_COLUMN = "device"
TARGET = "y"


def device_names(num_devices: int) -> list[str]:
    """``device_00``, ``device_01``, ... (zero-padded so that sorting keeps the order)."""
    width = max(2, len(str(num_devices - 1)))
    return [f"device_{k:0{width}d}" for k in range(num_devices)]


@functools.lru_cache(maxsize=4)
def fedprox_table(
    *, seed: int, num_devices: int = 30, alpha: float = 0.5, beta: float = 0.5, iid: bool = False
) -> pd.DataFrame:
    """Synthetic(alpha, beta) as one table: columns ``device``, ``x0``..``x59``, ``y``.

    Cached per process; do not mutate the result.
    """
    rng = np.random.default_rng(seed)
    samples = rng.lognormal(4, 2, num_devices).astype(int) + 50
    sigma_diag = np.power(np.arange(1, DIMENSION + 1, dtype=np.float64), -1.2)
    sd = np.sqrt(sigma_diag)

    if iid:
        mean_x = np.zeros((num_devices, DIMENSION))
        w_global = rng.normal(0, 1, (DIMENSION, NUM_CLASSES))
        b_global = rng.normal(0, 1, NUM_CLASSES)
    else:
        mean_w = rng.normal(0, alpha, num_devices)  # u_k; also the mean of b_k
        big_b = rng.normal(0, beta, num_devices)  # B_k
        mean_x = np.stack([rng.normal(big_b[k], 1, DIMENSION) for k in range(num_devices)])

    xs, ys, devices = [], [], []
    for k, name in enumerate(device_names(num_devices)):
        if iid:
            w, b = w_global, b_global
        else:
            w = rng.normal(mean_w[k], 1, (DIMENSION, NUM_CLASSES))
            b = rng.normal(mean_w[k], 1, NUM_CLASSES)
        x = mean_x[k] + sd * rng.standard_normal((int(samples[k]), DIMENSION))
        # argmax(softmax(z)) == argmax(z): softmax is monotone.
        y = np.argmax(x @ w + b, axis=1)
        xs.append(x)
        ys.append(y)
        devices.extend([name] * int(samples[k]))

    frame = pd.DataFrame(np.concatenate(xs), columns=[f"x{j}" for j in range(DIMENSION)])
    frame.insert(0, DEVICE_COLUMN, devices)
    frame[TARGET] = np.concatenate(ys).astype(np.int64)
    return frame
