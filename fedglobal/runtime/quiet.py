"""A quiet console: TensorFlow's start-up notices are dropped unless ``--verbose``.

``import tensorflow`` writes, from C++ and before anything in Python can set a
log level, about six lines to the process's stderr (twice: two shared
libraries each carry absl): "All log messages before absl::InitializeLog()",
the oneDNN notice and "Could not find cuda drivers". Its first operation on a
machine without a GPU adds ``E0000 ... failed call to cuInit``. A new user
reads an ``E`` line as an error.

- :func:`install` (run by ``import fedglobal``, so in every process that
  imports fedglobal, clients or the apps: workers, Ray actors, ClientApp
  processes) wraps the first ``import tensorflow``: file descriptor 2 goes to
  a temporary file during the import, and everything written there is written
  back afterwards except the start-up notices (``I``/``W`` lines of C++
  logging and absl's "before InitializeLog" line). ``E`` and ``F`` lines and
  Python's own warnings are kept.
- :func:`quiet_environment` sets ``TF_CPP_MIN_LOG_LEVEL=3`` unless it is set:
  C++ logs below FATAL are off in this process and the processes it starts
  (the cuInit line is an ERROR). The command line calls it; library users
  keep TensorFlow's defaults.

Nothing changes what is computed: GPUs stay visible and oneDNN stays on
(``TF_ENABLE_ONEDNN_OPTS`` changes results in the last digits). With
``FEDGLOBAL_VERBOSE=1`` (``fedglobal ... --verbose``) nothing is dropped.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import MutableMapping
from types import ModuleType
from typing import Any

__all__ = ["VERBOSE_ENV", "install", "is_notice", "quiet_environment", "verbose"]

#: ``1`` shows everything (set by ``--verbose``, inherited by child processes).
VERBOSE_ENV = "FEDGLOBAL_VERBOSE"

_NOTICE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] .*"
    # the second line of cpu_feature_guard's INFO notice
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate "
    r"compiler flags\.)$"
)


def verbose(environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether ``--verbose`` is on for this process (``FEDGLOBAL_VERBOSE=1``)."""
    return (os.environ if environ is None else environ).get(VERBOSE_ENV, "") == "1"


def is_notice(line: str) -> bool:
    """Whether ``line`` is one of TensorFlow's start-up notices (C++ INFO/WARNING, absl's)."""
    return bool(_NOTICE.match(line.rstrip("\r\n")))


def quiet_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """C++ logs of TensorFlow below FATAL off, unless verbose or already set."""
    environ = os.environ if environ is None else environ
    if not verbose(environ):
        environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader with stderr captured, then writes back all but the notices."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self.loader
        if module.__spec__ is not None:
            module.__spec__.loader = self.loader
        with _filtered_stderr():
            self.loader.exec_module(module)


def _flush_stderr() -> None:
    stream = sys.stderr
    if stream is not None:
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


class _filtered_stderr:
    def __enter__(self) -> None:
        self.saved: int | None = None
        try:
            _flush_stderr()
            self.captured = tempfile.TemporaryFile()
            self.saved = os.dup(2)
            os.dup2(self.captured.fileno(), 2)
        except (OSError, ValueError):  # no usable stderr (a daemon): nothing to quiet
            if self.saved is not None:
                os.close(self.saved)
                self.saved = None

    def __exit__(self, *exc: object) -> None:
        if self.saved is None:
            return
        try:
            _flush_stderr()
        finally:
            os.dup2(self.saved, 2)
            os.close(self.saved)
        self.captured.seek(0)
        text = self.captured.read().decode("utf-8", "replace")
        self.captured.close()
        kept = "".join(line for line in text.splitlines(keepends=True) if not is_notice(line))
        if kept:
            os.write(2, kept.encode("utf-8"))


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, as the other finders do, with a quiet loader."""

    def find_spec(self, name: str, path: Any = None, target: Any = None):
        if name != "tensorflow":
            return None
        uninstall()
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or verbose():
            return spec
        spec.loader = _QuietLoader(spec.loader)
        return spec


_FINDER = _QuietFinder()


def install() -> None:
    """Quiet the first ``import tensorflow`` of this process (no-op if already imported)."""
    if "tensorflow" in sys.modules or verbose() or _FINDER in sys.meta_path:
        return
    sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Remove the import hook (done by itself at the first ``import tensorflow``)."""
    if _FINDER in sys.meta_path:
        sys.meta_path.remove(_FINDER)
