"""SCAFFOLD on the client: the region's control variate ``c_i`` and its update.

Karimireddy et al. 2020, "SCAFFOLD: Stochastic Controlled Averaging for
Federated Learning", Algorithm 1, option II (server side:
:mod:`strategies.scaffold`). A train message that carries the server's ``c``
(record ``scaffold-control``) makes the region train with the gradient
correction ``c - c_i`` (:func:`correction_for`, on the Keras ``fit`` path and
in cohort training alike), then update its own ``c_i`` and reply with only
``Delta c_i`` (:func:`control_delta`).

``c_i`` lives in the node's ``context.state`` (:data:`STATE_KEY`), so the
checkpoint saves and a resume restores it (:mod:`clients.state`), as it does
FedPer's local layers; it is never sent. A name missing from ``c`` or ``c_i``
(the first round) is a zero.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.app import Context, Message

from clients.regional import FitResult, RegionalClient
from fedglobal.protocol import SERVER_ROUND_KEY, from_record, to_record
from strategies.client_metrics import LOCAL_STEPS
from strategies.scaffold import CONTROL_KEY, DELTA_KEY

__all__ = ["CONTROL_KEY", "DELTA_KEY", "STATE_KEY", "control_delta", "correction_for"]

#: ``context.state`` key of this region's control variate ``c_i``.
STATE_KEY = "scaffold-client-control"


def _controls(
    message: Message, context: Context, client: RegionalClient
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]] | None:
    """``(c, c_i)`` over the client's trainable variables (zeros where absent)."""
    if CONTROL_KEY not in message.content:
        return None
    weights = from_record(message.content["arrays"])
    server = from_record(message.content[CONTROL_KEY])
    saved = context.state.get(STATE_KEY)
    own = from_record(saved) if saved is not None else {}
    c, c_i = {}, {}
    for name in client.trainable_names:
        zero = np.zeros_like(weights[name])
        c[name] = np.asarray(server.get(name, zero), zero.dtype)
        c_i[name] = np.asarray(own.get(name, zero), zero.dtype)
    return c, c_i


def correction_for(
    message: Message, context: Context, client: RegionalClient
) -> dict[str, np.ndarray] | None:
    """``c - c_i`` by trainable variable if the message carries ``c``, else None."""
    controls = _controls(message, context, client)
    if controls is None:
        return None
    c, c_i = controls
    return {name: c[name] - c_i[name] for name in c}


def control_delta(
    message: Message, context: Context, client: RegionalClient, result: FitResult
) -> Mapping[str, np.ndarray] | None:
    """Option II: store ``c_i+ = c_i - c + (x - y) / (K lr)``; return ``c_i+ - c_i``.

    ``x`` are the weights the message carried, ``y`` the trained ones, ``K`` the
    steps taken (the reply's ``local-steps``, else the round's plan), ``lr`` the
    client's learning rate. None if the message carries no ``c``.
    """
    controls = _controls(message, context, client)
    if controls is None:
        return None
    c, c_i = controls
    config = message.content["config"]
    steps = result.metrics.get(LOCAL_STEPS)
    if steps is None:
        steps = client.plan(int(config[SERVER_ROUND_KEY])).steps
    scale = 1.0 / (float(steps) * float(client.config.client.learning_rate))
    sent = message.content["arrays"]
    new, delta = {}, {}
    for name in c:
        x = np.asarray(sent[name].numpy(), np.float64)
        y = np.asarray(result.weights[name], np.float64)
        updated = c_i[name] - c[name] + (x - y) * scale
        new[name] = updated.astype(c_i[name].dtype)
        delta[name] = (updated - c_i[name]).astype(c_i[name].dtype)
    context.state[STATE_KEY] = to_record(new)
    return delta
