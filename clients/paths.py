"""Which path trained a region's round, and why: cohort training or Keras ``fit``.

Cohort training (:mod:`clients.cohort`) is the default (``[client] cohort =
"auto"``). A region it cannot take goes through the per-message handler
(:func:`clients.app.train`, Keras ``fit``); the cohort path notes the reason
here, keyed by the message, and the handler puts it in its reply's ``meta``
(``trained-by``, ``why``) so the server can record, per round, which path
trained and why (``rounds.csv`` ``trained_by``; ``summary.json`` ``training``).
"""

from __future__ import annotations

from flwr.app import Message

__all__ = ["COHORT", "KERAS_FIT", "fallback_reason", "note_fallback"]

#: ``trained-by`` values in a train reply's ``meta``.
COHORT = "cohort"
KERAS_FIT = "keras-fit"

_MAX_NOTES = 100_000  # bounded: a reply that never comes must not grow this forever
_notes: dict[str, str] = {}


def note_fallback(message: Message, reason: str) -> None:
    """The cohort path leaves ``message`` to the per-message handler, for ``reason``."""
    if len(_notes) >= _MAX_NOTES:
        _notes.clear()
    _notes[message.metadata.message_id] = reason


def fallback_reason(message: Message, cohort: bool | str) -> str:
    """Why ``message`` trains with Keras ``fit`` (``[client] cohort`` is ``cohort``)."""
    noted = _notes.pop(message.metadata.message_id, None)
    if noted is not None:
        return noted
    if cohort is False:
        return "client.cohort = false"
    return "the engine delivers train messages one at a time (no cohort path on it)"
