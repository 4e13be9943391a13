"""Client side of update compression (``[client] compression``; :mod:`strategies.compression`).

A train reply carries ``encode(w_local - w_global + residual)`` instead of
``w_local``, plus a ``compression`` ConfigRecord naming the codec; the
server's :class:`fedglobal.server.comm.DecodingGrid` rebuilds the weights.
With ``error_feedback`` the residual (what the encoding lost) stays in the
region's node state and is added to its next update.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message

from clients.mods import CLIPPING_NORM_KEY
from fedglobal.config import ExperimentConfig
from fedglobal.protocol import from_record, to_record
from strategies import compression

log = logging.getLogger(__name__)

RESIDUAL_STATE_KEY = "fedglobal-compression-residual"

_warned = False


def reply_arrays(
    message: Message, context: Context, weights: Mapping[str, np.ndarray], cfg: ExperimentConfig
) -> tuple[ArrayRecord, ConfigRecord | None]:
    """The reply's ArrayRecord and, if compressed, its ``compression`` ConfigRecord."""
    global _warned
    codec = cfg.client.compression
    config = message.content["config"]
    if codec == "none":
        return to_record(weights), None
    if CLIPPING_NORM_KEY in config:  # DP clipping acts on weights, not on encoded updates
        if not _warned:
            log.warning("update compression is off while the server asks for clipping")
            _warned = True
        return to_record(weights), None
    global_weights = from_record(message.content["arrays"])
    residual = None
    if cfg.client.error_feedback and RESIDUAL_STATE_KEY in context.state:
        residual = from_record(context.state[RESIDUAL_STATE_KEY])
    wire, new_residual = compression.compress(
        weights, global_weights, codec, fraction=cfg.client.topk_fraction, residual=residual
    )
    if cfg.client.error_feedback:
        context.state[RESIDUAL_STATE_KEY] = to_record(new_residual)
    return to_record(wire), ConfigRecord({"codec": codec})
