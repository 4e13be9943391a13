"""Named weights <-> Flower ArrayRecord (DESIGN.md, decision 1)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord


def to_record(weights: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord keyed by variable path, in the given order."""
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in weights.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named numpy arrays carried in an ArrayRecord, in order."""
    return {name: array.numpy() for name, array in record.items()}
