"""Extra train metrics a strategy asks its clients for (the wire names both sides spell).

Some aggregation rules need more from a client than its new weights and example
count. A strategy lists what it needs in the train config key
:data:`REPORT_KEY` (a list of names); fedglobal's clients (both the Keras
``fit`` path and cohort training) add those values to the reply's ``metrics``
record, and nothing else, so that a plain FedAvg reply stays as small as it was.

- :data:`START_LOSS`: the mean training loss of the region at the round's start
  weights, in inference mode, over all its training rows (q-FFL's ``F_k(w^t)``,
  Li et al. 2020);
- :data:`LOCAL_STEPS`: the optimizer steps the client actually took this round
  (FedNova's ``tau_k``, Wang et al. 2020; SCAFFOLD's ``K``);
- :data:`LEARNING_RATE`: the client optimizer's learning rate (q-FFL's
  Lipschitz estimate ``L = 1 / lr``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from .errors import AggregationError

__all__ = ["KNOWN", "LEARNING_RATE", "LOCAL_STEPS", "REPORT_KEY", "START_LOSS", "reported"]

#: Train config key: the names of the extra metrics the client must report.
REPORT_KEY = "report-metrics"
START_LOSS = "start-loss"
LOCAL_STEPS = "local-steps"
LEARNING_RATE = "learning-rate"
#: Every name a fedglobal client knows how to report.
KNOWN = (START_LOSS, LOCAL_STEPS, LEARNING_RATE)


def reported(metrics: object, name: str, *, client: str, minimum: float = 0.0) -> float:
    """The value ``name`` of a reply's metrics, checked finite and ``>= minimum``.

    Raises:
        AggregationError: missing (the client did not report it), not a finite
            number, or below ``minimum``; the message names the client.
    """
    if not isinstance(metrics, Mapping):
        raise AggregationError("reply has no metrics record", client=client)
    value = metrics.get(name)
    if value is None:
        raise AggregationError(
            f"reply lacks the metric {name!r} the strategy asked for (train config "
            f"{REPORT_KEY!r}); is the client fedglobal's?",
            client=client,
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AggregationError(
            f"metric {name!r} = {value!r} is not a number", client=client
        ) from None
    if not math.isfinite(number) or number < minimum:
        raise AggregationError(
            f"metric {name!r} = {value!r}: must be a finite number >= {minimum:g}", client=client
        )
    return number
