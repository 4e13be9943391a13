"""A strategy of your own: FedAvg that weights each region by ``n_k ** power``.

FedAvg (McMahan et al. 2017) averages the regions' weights by their numbers of
training examples ``n_k``, so a few large regions dominate the global model.
Uniform averaging (every region counts once) ignores how much data stands
behind each update. Weighting by ``n_k ** power`` interpolates between the two:
``power = 1`` is FedAvg, ``power = 0`` is the uniform average, and the default
``power = 0.5`` (the square root) is a compromise. It is a heuristic to compare
against FedAvg in a benchmark, not a method from a paper.

The experiment file names the class by component reference, a path relative to
the experiment file (``custom_strategy.toml``)::

    [strategy]
    name = "custom_strategy.py:PowerFedAvg"
    power = 0.5

A package you install works the same way: ``name = "mypkg.strategies:PowerFedAvg"``.

What a subclass gets from :class:`strategies.FedAvg`: seeded client sampling, the
checks of every reply, the log of rejected and failed replies, stragglers,
``get_config()`` and ``state_dict()``. Its extension points:

- ``_update_weight(server_round, content, label, arrays, weight)``: the weight
  an accepted update is averaged with (``weight`` is its ``num-examples``); a
  float, or a dict of per-layer weights (overridden here);
- ``_aggregate_arrays(server_round, updates)``: the whole aggregation, from
  ``(region, arrays, weight)`` updates to the new named arrays;
- ``_train_config(config, server_round)``: the config each train message carries.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from flwr.app import RecordDict

from strategies import FedAvg
from strategies.errors import InvalidParameterError

__all__ = ["PowerFedAvg"]


class PowerFedAvg(FedAvg):
    """FedAvg with region ``k``'s update weighted by ``n_k ** power``.

    Args:
        power: exponent in [0, 1]; 1 is FedAvg, 0 the uniform average.
        **kwargs: the other :class:`strategies.FedAvg` parameters
            (``fraction_train``, ``min_train_clients``...).
    """

    def __init__(self, *, power: float = 0.5, **kwargs: Any) -> None:
        if (
            isinstance(power, bool)
            or not isinstance(power, numbers.Real)
            or not math.isfinite(power)
            or not 0.0 <= power <= 1.0
        ):
            raise InvalidParameterError(f"power must be a number in [0, 1], got {power!r}")
        super().__init__(**kwargs)
        self.power = float(power)
        self._params["power"] = power  # get_config() rebuilds an equal strategy

    def _update_weight(
        self,
        server_round: int,
        content: RecordDict,
        label: str,
        arrays: dict[str, np.ndarray],
        weight: float,
    ) -> float:
        return weight**self.power
