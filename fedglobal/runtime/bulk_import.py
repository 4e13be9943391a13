"""Import big libraries without CPython's cyclic garbage collector.

Importing TensorFlow and Keras creates about 400,000 long-lived objects and next to
no cyclic garbage. CPython 3.11 still runs its collector as the heap grows, and a
full (generation 2) collection every time the long-lived objects grow by a quarter:
measured here, 0.8 s of a 4.3 s ``import keras`` went to collections that freed
nothing worth it, and one more full collection (about 0.2 s) came due soon after.

:func:`bulk_import` pauses the collector for the import, then moves everything the
import loaded to the permanent generation with :func:`gc.freeze` ("ignore them in
all the future collections", the Python documentation), so later full collections
scan only what the run creates. Objects frozen this way are never collected: it is
done at the first import of an app only, when what is alive is the libraries.
Measured on the issue's workload, ``fedglobal simulate`` in-process: 6.9 s -> 5.7 s
median over 8 alternating runs (docs/design-notes.md).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def bulk_import() -> Iterator[None]:
    """Pause the cyclic collector while the block imports, then freeze what is alive.

    The collector is left as it was (a block that raises freezes nothing).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if enabled:
            gc.enable()
