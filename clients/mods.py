"""Flower ClientApp mods fedglobal's ClientApp always carries.

Each mod acts only when the message asks for it, so the same ClientApp serves
every strategy on every engine.
"""

from __future__ import annotations

from flwr.app import Context, Message, MessageType
from flwr.clientapp.mod import fixedclipping_mod
from flwr.clientapp.typing import ClientAppCallable

#: Train config key of the client-side clipping norm (Flower's KEY_CLIPPING_NORM).
CLIPPING_NORM_KEY = "clipping_norm"


def optional_clipping_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Clip this client's update to ``clipping_norm`` before it leaves (DP-FedAvg).

    Applies Flower's ``fixedclipping_mod`` to train messages whose config holds
    ``clipping_norm`` (sent by ``strategies.DPFedAvg(clipping="client")``);
    other messages pass through untouched.
    """
    if msg.metadata.message_type == MessageType.TRAIN and msg.has_content():
        config = msg.content.get("config")
        if config is not None and CLIPPING_NORM_KEY in config:
            return fixedclipping_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)
