"""Keras callbacks of local training, from ``[client] callbacks``.

The experiment names callback *factories* by component reference
(``"keras.callbacks:TerminateOnNaN"``, ``"mypkg.cb:make_logger"``,
``"callbacks.py:RecordEpochs"``), optionally with keyword arguments
(``{factory = "keras.callbacks:EarlyStopping", monitor = "loss"}``). Objects
cannot travel from the user to a client that runs in another process (Ray
actors, SuperNodes), so each client process imports the factory and calls it
afresh for every local fit: a callback's state never leaks from one region or
round to the next.

A factory that declares a parameter ``region`` or ``server_round`` gets the
fit's region and round. :mod:`fedglobal.config` checks, where the experiment is
loaded (server and clients), that each factory imports and accepts its
arguments.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras

from fedglobal.config import CALLBACK_CONTEXT, ClientConfig, callback_spec
from fedglobal.errors import ConfigError

__all__ = ["make_callbacks"]


def _accepts(factory: Any) -> set[str]:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return set()
    return {name for name in CALLBACK_CONTEXT if name in parameters}


def make_callbacks(
    client: ClientConfig, *, region: str, server_round: int
) -> list[keras.callbacks.Callback]:
    """New callback objects for one local fit of ``region`` in ``server_round``.

    Raises:
        ConfigError: a factory cannot be loaded, fails, or returns something
            that is not a ``keras.callbacks.Callback`` (naming the entry).
    """
    from strategies.registry import load_reference

    out: list[keras.callbacks.Callback] = []
    context = {"region": region, "server_round": server_round}
    for i, entry in enumerate(client.callbacks):
        reference, kwargs = callback_spec(entry)
        where = f"client.callbacks[{i}] = {reference!r}"
        try:
            factory = load_reference(reference)
        except ValueError as exc:  # checked at load; a client may lack the module
            raise ConfigError(f"client.callbacks[{i}] in region {region!r}: {exc}") from None
        given = {name: context[name] for name in _accepts(factory)}
        callback = factory(**kwargs, **given)
        if not isinstance(callback, keras.callbacks.Callback):
            raise ConfigError(
                f"{where} returned {type(callback).__name__}, not a keras.callbacks.Callback"
            )
        out.append(callback)
    return out
