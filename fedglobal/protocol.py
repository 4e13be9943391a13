"""What crosses the wire between the ServerApp and the ClientApp.

One home for the names both sides spell, so that a key is written once, and for
named weights <-> Flower ArrayRecord (DESIGN.md, decision 1).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord

from strategies.layerwise import LOCAL_LAYERS_KEY

# ---- message types ---------------------------------------------------------------------
#: Before round 1: each region's statistics of its training rows (the federated schema).
STATS_QUERY = "query"
#: Personal layers (FedPer, FedBN): each region's own values of its local layers.
LOCAL_LAYERS_QUERY = "query.local_layers"
#: Checkpoints: each region's node state (fedglobal.server.checkpointing).
STATE_QUERY = "query.client_state"
#: Resume: a region's node state sent back to it.
RESTORE_QUERY = "query.restore_client_state"
#: In a state reply or restore message: the prefix of each ``context.state`` record's key.
STATE_PREFIX = "state/"

# ---- record keys ---------------------------------------------------------------------
#: In every message's ``config``: the round it belongs to (0 before round 1).
SERVER_ROUND_KEY = "server-round"
#: In every reply: a ConfigRecord saying who answered (``region``, ``round``) and how.
META_KEY = "meta"
#: In ``meta``: the region that answered.
REGION_KEY = "region"
#: In train/evaluate configs (``LOCAL_LAYERS_KEY``, from strategies.layerwise): the
#: variable paths each region keeps for itself (FedPer, FedBN, Layerwise rules).
#:
#: Keys that one strategy family adds are defined next to its maths, where both the
#: server and the client read them: ``strategies.client_metrics`` (``report-metrics``:
#: the extra metrics a strategy asks for; ``start-loss``, ``local-steps``,
#: ``learning-rate``), ``strategies.scaffold`` (``scaffold-control``,
#: ``scaffold-delta``), ``strategies.ditto`` (``ditto-lambda``, ``ditto-personal``),
#: ``strategies.compression`` (``compression``).

__all__ = [
    "BOOKKEEPING_KEYS",
    "HOST_KEY",
    "LOCAL_LAYERS_KEY",
    "LOCAL_LAYERS_QUERY",
    "META_KEY",
    "PID_KEY",
    "PLACEMENT_KEYS",
    "RAY_IP_KEY",
    "RAY_NODE_KEY",
    "REGION_KEY",
    "RESTORE_QUERY",
    "SERVER_ROUND_KEY",
    "STATE_PREFIX",
    "STATE_QUERY",
    "STATS_QUERY",
    "TRAINED_BY_KEY",
    "WHY_KEY",
    "from_record",
    "to_record",
]

#: In a train reply's ``meta``: which path trained the region's round
#: (``"cohort"``: one XLA program for the round's regions; ``"keras-fit"``: Keras
#: ``fit``, region by region) and, for Keras ``fit``, why the cohort path did not.
TRAINED_BY_KEY = "trained-by"
WHY_KEY = "why"

#: In a train reply's ``meta``: where the region trained (fedglobal.engines.placement).
HOST_KEY = "host"
PID_KEY = "pid"
RAY_NODE_KEY = "ray-node"
RAY_IP_KEY = "ray-ip"
PLACEMENT_KEYS = (HOST_KEY, PID_KEY, RAY_NODE_KEY, RAY_IP_KEY)

#: The simulator's own bookkeeping in a reply's ``meta`` (where and how a region
#: trained): not counted in message sizes (rounds.csv bytes, the simulated clock),
#: since it is not the federation's traffic and differs by engine.
BOOKKEEPING_KEYS = frozenset({TRAINED_BY_KEY, WHY_KEY, *PLACEMENT_KEYS})


def to_record(weights: Mapping[str, np.ndarray]) -> ArrayRecord:
    """An ArrayRecord keyed by variable path, in the given order."""
    return ArrayRecord({name: Array(np.asarray(value)) for name, value in weights.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    """The named numpy arrays carried in an ArrayRecord, in order."""
    return {name: array.numpy() for name, array in record.items()}
