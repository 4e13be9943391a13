"""Loading the app components: the first import runs without the cyclic collector.

The loading runs in a fresh interpreter, where TensorFlow and Keras are not yet
imported and freezing objects cannot touch this test session's heap.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest

from fedglobal.engines import load_component
from fedglobal.errors import EngineError
from fedglobal.runtime.bulk_import import bulk_import

FIRST_LOAD = """
import gc, json
from fedglobal.engines import load_component

collections = []
gc.callbacks.append(lambda phase, info: phase == "start" and collections.append(1))
before = gc.get_freeze_count()
app = load_component("clients.app:app")
first = gc.get_freeze_count()
during = len(collections)
again = load_component("clients.app:app")
print(json.dumps({
    "same_app": app is again, "enabled": gc.isenabled(), "before": before,
    "first": first, "second": gc.get_freeze_count(), "collections": during,
}))
"""


def test_first_load_imports_without_collections_and_freezes_the_libraries():
    out = subprocess.run(
        [sys.executable, "-c", FIRST_LOAD], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["same_app"] and result["enabled"]
    # importing TensorFlow and Keras with the collector on runs it hundreds of times
    assert result["collections"] == 0
    assert result["first"] - result["before"] > 100_000  # the libraries' objects
    assert result["second"] == result["first"]  # already imported: nothing frozen again


def test_bulk_import_leaves_the_collector_as_it_was_and_freezes_nothing_on_error():
    frozen = gc.get_freeze_count()
    gc.disable()
    try:
        with pytest.raises(ModuleNotFoundError), bulk_import():
            import fedglobal_no_such_module  # noqa: F401
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert gc.get_freeze_count() == frozen
    with pytest.raises(EngineError, match="cannot load app component 'fedglobal_nope:app'"):
        load_component("fedglobal_nope:app")
    assert gc.isenabled() and gc.get_freeze_count() == frozen
