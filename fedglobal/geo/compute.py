"""Compute time: a model's training FLOPs per local step, counted from the Keras model.

Forward FLOPs per example are counted layer by layer (a multiply-add is 2
FLOPs):

- ``Dense``: ``2 * inputs * units`` (+ ``units`` for the bias), times the
  positions it is applied to (all but the last axis of its input);
- convolutions (``Conv1D/2D/3D``): ``2 * prod(kernel shape) * prod(output
  positions)``;
- any other layer with weights (BatchNormalization, embeddings...): 2 FLOPs
  per weight, a small term.

A training step costs about 3x its forward pass: the backward pass computes
gradients for both activations and weights, about twice the forward FLOPs
(Kaplan et al. 2020, "Scaling Laws for Neural Language Models", §2.1:
C ≈ 6N per token, of which 2N forward). So

    flops_per_step = 3 * forward_flops_per_example * batch_size

and a region's simulated seconds per step are ``flops_per_step / (compute *
1e9)`` with ``compute`` its GFLOP/s. The default, 50 GFLOP/s, is a nominal
sustained figure for one modern server CPU core: about half the FP32 peak of
a 3 GHz core with two AVX2 FMA units (2 units x 8 lanes x 2 FLOPs x 3 GHz =
96 GFLOP/s; Intel 64 and IA-32 Architectures Optimization Reference Manual).
Small models reach far less in practice (framework overhead dominates); the
clock models the hardware, not this machine's TensorFlow, so that it is the
same everywhere.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["TRAIN_TO_FORWARD", "forward_flops_per_example", "train_flops_per_step"]

#: Training step FLOPs / forward FLOPs (Kaplan et al. 2020).
TRAIN_TO_FORWARD = 3.0


def _positions(shape: Any) -> int:
    """Product of the non-batch axes of a symbolic shape, but the last (1 if unknown)."""
    dims = [d for d in tuple(shape)[1:-1]]
    return int(math.prod(int(d) for d in dims if d is not None)) if dims else 1


def _layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        if getattr(layer, "layers", None):  # a nested model or block
            out.extend(_layers(layer))
        else:
            out.append(layer)
    return out


def forward_flops_per_example(model: Any) -> float:
    """Forward-pass FLOPs for one example through a built Keras ``model``."""
    total = 0.0
    for layer in _layers(model):
        kind = type(layer).__name__
        weights = [w for w in layer.weights]
        if not weights:
            continue
        kernel = getattr(layer, "kernel", None)
        if kind == "Dense" and kernel is not None:
            n_in, n_out = int(kernel.shape[0]), int(kernel.shape[-1])
            try:
                positions = _positions(layer.input.shape)
            except (AttributeError, ValueError, TypeError):
                positions = 1
            total += positions * (2 * n_in * n_out + n_out)
        elif kind.startswith("Conv") and kernel is not None:
            try:
                out_positions = _positions(layer.output.shape)
            except (AttributeError, ValueError, TypeError):
                out_positions = 1
            total += 2 * math.prod(int(d) for d in kernel.shape) * out_positions
        else:
            total += 2 * sum(math.prod(int(d) for d in w.shape) for w in weights)
    return float(total)


def train_flops_per_step(model: Any, batch_size: int) -> float:
    """FLOPs of one local training step of ``batch_size`` examples."""
    return TRAIN_TO_FORWARD * forward_flops_per_example(model) * int(batch_size)
