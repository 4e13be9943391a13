"""What crosses the wire between the ServerApp and the ClientApp: record keys.

One home for the names both sides spell, so that a key is written once.
"""

from __future__ import annotations

__all__ = ["TRAINED_BY_KEY", "WHY_KEY"]

#: In a train reply's ``meta``: which path trained the region's round
#: (``"cohort"``: one XLA program for the round's regions; ``"keras-fit"``: Keras
#: ``fit``, region by region) and, for Keras ``fit``, why the cohort path did not.
TRAINED_BY_KEY = "trained-by"
WHY_KEY = "why"
