"""Training FLOPs per step, counted from a Keras model by hand."""

from __future__ import annotations

import keras
import pytest

from fedglobal.geo.compute import forward_flops_per_example, train_flops_per_step


def test_dense_layers():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(64), keras.layers.Dense(1)])
    # 2*5*64 + 64 (bias) + 2*64*1 + 1 = 704 + 129
    assert forward_flops_per_example(model) == 833
    assert train_flops_per_step(model, 32) == 3 * 833 * 32  # backward = 2x forward


def test_convolution_counts_output_positions():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.Flatten(),
            keras.layers.Dense(2),
        ]
    )
    # conv: 2 * (3*3*1*4) * (8*8) = 4608; dense: 2*256*2 + 2 = 1026
    assert forward_flops_per_example(model) == 4608 + 1026


def test_other_layers_with_weights_count_two_per_weight():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    # batch norm: 4 x 3 weights (gamma, beta, moving mean, variance) x 2; dense 2*3 + 1
    assert forward_flops_per_example(model) == pytest.approx(24 + 7)
