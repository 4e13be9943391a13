"""Input pipelines: :func:`make_dataset` and per-round shuffle seeds (:func:`shuffle_seed`).

TensorFlow is imported only when a dataset is built, so the server side can
use :mod:`fedglobal.data` without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedglobal.data._util import stable_hash

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["make_dataset", "shuffle_seed"]


def shuffle_seed(seed: int, server_round: int, region: str) -> int:
    """A stable 31-bit seed from (seed, round, region), the same in every process."""
    sequence = np.random.SeedSequence([int(seed), int(server_round), stable_hash(region)])
    return int(sequence.generate_state(1, dtype=np.uint32)[0] & 0x7FFFFFFF)


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int | None = None,
    repeat: bool = False,
) -> tf.data.Dataset:
    """A ``tf.data`` pipeline over (x, y): shuffle (full buffer, seeded, the same order
    on every pass), optionally repeat, batch, prefetch (AUTOTUNE)."""
    import tensorflow as tf

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(max(len(x), 1), seed=seed, reshuffle_each_iteration=False)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
