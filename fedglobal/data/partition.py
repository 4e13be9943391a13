"""Synthetic partitions of one pooled table into regions: IID, Dirichlet label skew
and label-sorted shards.

All are pure functions of (rows, seed): the same table and seed always give
the same assignment, in every process. They return, for each row, the index
of its region; :func:`region_names` gives the names ``region_000``, ... .
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedglobal.data._util import stable_hash

__all__ = ["dirichlet_partition", "iid_partition", "region_names", "shards_partition"]


def region_names(num_regions: int) -> list[str]:
    """``region_000``, ``region_001``, ... (zero-padded so that sorting keeps the order)."""
    width = max(3, len(str(num_regions - 1)))
    return [f"region_{k:0{width}d}" for k in range(num_regions)]


def iid_partition(num_rows: int, num_regions: int, seed: int) -> np.ndarray:
    """Shuffle rows by ``seed`` and deal them into ``num_regions`` parts of equal size (+-1)."""
    rng = np.random.default_rng([seed, stable_hash("partition/iid")])
    order = rng.permutation(num_rows)
    assignment = np.empty(num_rows, dtype=np.int64)
    for k, part in enumerate(np.array_split(order, num_regions)):
        assignment[part] = k
    return assignment


def dirichlet_partition(
    labels: Sequence[str] | np.ndarray, num_regions: int, alpha: float, seed: int
) -> np.ndarray:
    """Dirichlet label skew (Hsu, Qi, Brown 2019, "Measuring the Effects of
    Non-Identical Data Distribution for Federated Visual Classification").

    For each class c (in sorted order), the rows of class c are shuffled and
    split among the regions in proportions ``q_c ~ Dirichlet(alpha * 1)``.
    Small ``alpha`` gives each region few classes; large ``alpha`` tends to IID.
    Some regions may receive no rows (then the rare-regions policy applies).
    """
    labels = np.asarray(labels).astype(str)
    rng = np.random.default_rng([seed, stable_hash("partition/dirichlet")])
    assignment = np.empty(len(labels), dtype=np.int64)
    for c in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(len(rows))]
        proportions = rng.dirichlet(alpha * np.ones(num_regions))
        cuts = (np.cumsum(proportions)[:-1] * len(rows)).astype(np.int64)
        for k, part in enumerate(np.split(rows, cuts)):
            assignment[part] = k
    return assignment


def shards_partition(
    labels: Sequence[str] | np.ndarray, num_regions: int, shards_per_region: int, seed: int
) -> np.ndarray:
    """McMahan et al. 2017's pathological non-IID split ("Communication-Efficient
    Learning of Deep Networks from Decentralized Data", section 3).

    The rows are sorted by label (rows of one label in a seeded random order),
    cut into ``num_regions * shards_per_region`` contiguous shards of equal size
    (+-1 row), and each region is dealt ``shards_per_region`` shards drawn at
    random (seeded). With 2 shards per region most regions see only two labels.
    Every region gets rows.

    Raises:
        ValueError: fewer rows than shards (the message says how many of each).
    """
    labels = np.asarray(labels).astype(str)
    shards = num_regions * shards_per_region
    if len(labels) < shards:
        raise ValueError(
            f"{len(labels)} rows cannot be cut into num_regions x shards_per_region = "
            f"{num_regions} x {shards_per_region} = {shards} shards of at least one row"
        )
    rng = np.random.default_rng([seed, stable_hash("partition/shards")])
    within = rng.permutation(len(labels))  # a seeded order inside each label
    order = within[np.argsort(labels[within], kind="stable")]
    dealt = rng.permutation(shards)  # shard dealt[j] goes to region j // shards_per_region
    assignment = np.empty(len(labels), dtype=np.int64)
    parts = np.array_split(order, shards)
    for j, shard in enumerate(dealt):
        assignment[parts[shard]] = j // shards_per_region
    return assignment
