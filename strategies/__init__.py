"""Server-side aggregation for fedglobal: pure maths, Flower strategies, a registry.

- :mod:`strategies.aggregate`: streaming, checked averages of named arrays.
- :class:`FedAvg` (McMahan et al. 2017), :class:`Layerwise` (per-layer rules and
  intervals, FedLAMA-style, Lee et al. 2023), :class:`FedPer` (Arivazhagan et al.
  2019), :class:`FedBN` (Li et al. 2021).
- :func:`get` / :func:`register` / :func:`available`: strategies by name.
"""

from . import aggregate, errors
from .fedavg import FedAvg
from .layer_rules import LayerRule
from .layerwise import LOCAL_LAYERS_KEY, FedBN, FedPer, Layerwise
from .registry import available, get, register

__all__ = [
    "LOCAL_LAYERS_KEY",
    "FedAvg",
    "FedBN",
    "FedPer",
    "LayerRule",
    "Layerwise",
    "aggregate",
    "available",
    "errors",
    "get",
    "register",
]
