"""Ditto on the client: the region's personal model (Li et al. 2021).

Server side: :mod:`strategies.ditto`. A train message whose config carries
``"ditto-lambda"`` makes the region, after its usual (FedAvg) training of the
global model, train its personal model ``v_k`` with the proximal term
``lambda/2 * ||v - w||^2`` towards the round's global weights ``w``: on the
Keras ``fit`` path (:func:`train_personal`) or in cohort training, where the
round's personal models train together as a second cohort program
(:mod:`clients.cohort`). ``v_k`` stays in the node's ``context.state``
(:data:`STATE_KEY`; checkpointed with the run, never sent). An evaluate message
with ``"ditto-personal"`` evaluates ``v_k`` (:func:`evaluation_weights`).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Context, Message

from clients.node import fit_options
from clients.regional import RegionalClient
from fedglobal.protocol import SERVER_ROUND_KEY, from_record, to_record
from strategies.ditto import LAMBDA_KEY, PERSONAL_KEY

__all__ = [
    "LAMBDA_KEY",
    "PERSONAL_KEY",
    "STATE_KEY",
    "evaluation_weights",
    "keep",
    "personal_start",
    "train_personal",
]

#: ``context.state`` key of this region's personal model ``v_k`` (every variable).
STATE_KEY = "ditto-personal-model"


def personal_start(
    message: Message, context: Context, global_weights: dict[str, np.ndarray]
) -> tuple[dict[str, np.ndarray], float] | None:
    """``(v_k, lambda)`` to train from, if the message asks for Ditto; else None.

    ``v_k`` is the region's saved personal model, or the global weights the
    first time.
    """
    config = message.content["config"]
    if LAMBDA_KEY not in config:
        return None
    saved = context.state.get(STATE_KEY)
    start = from_record(saved) if saved is not None else dict(global_weights)
    return start, float(config[LAMBDA_KEY])


def keep(context: Context, weights: dict[str, np.ndarray]) -> None:
    """Store the region's personal model ``v_k``."""
    context.state[STATE_KEY] = to_record(weights)


def train_personal(
    message: Message,
    context: Context,
    client: RegionalClient,
    global_weights: dict[str, np.ndarray],
) -> None:
    """Keras ``fit`` of the personal model from ``v_k`` towards ``global_weights``; kept."""
    start = personal_start(message, context, global_weights)
    if start is None:
        return
    personal, lam = start
    config = message.content["config"]
    result = client.fit(
        personal,
        int(config[SERVER_ROUND_KEY]),
        proximal_mu=lam,
        local_steps=fit_options(config)["local_steps"],
        proximal_anchor=global_weights,
    )
    keep(context, result.weights)


def evaluation_weights(message: Message, context: Context) -> dict[str, np.ndarray] | None:
    """The personal model to evaluate, if the message asks for it and the region has one."""
    if not message.content["config"].get(PERSONAL_KEY, False):
        return None
    saved = context.state.get(STATE_KEY)
    return None if saved is None else from_record(saved)
