"""End a command-line process without the interpreter's teardown.

Once TensorFlow is loaded, Python's own shutdown (clearing every module, a last
garbage collection, then TensorFlow's C++ static destructors) takes about a
second on the 2-core machine this project is measured on: ``import tensorflow``
then a normal exit took 4.1-4.4 s, the same with :func:`exit_now` 3.0-3.1 s.
A finished ``fedglobal simulate`` has nothing left to do by then, so the console
script ends through :func:`exit_now`: it runs the :mod:`atexit` handlers (logging's
flush, temporary directories, the worker pool, started processes, Ray's
shutdown), flushes the standard streams and leaves with :func:`os._exit`.

Library calls (:func:`fedglobal.simulate` from Python, the tests) never go
through here: only the console script and the benchmark's child processes do.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_now(code: int) -> NoReturn:
    """Run the exit handlers, flush stdout and stderr, and end the process with ``code``."""
    try:
        atexit._run_exitfuncs()  # what a normal exit runs first; errors are printed, not raised
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken pipe: nothing more to say
                pass
        os._exit(code)
