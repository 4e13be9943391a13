"""Derived tables for benchmarks: a real table reshaped into a prediction task.

A suite may name ``source = "derived:<name>"``; the runner materialises the
table once (a Parquet file under ``$FEDGLOBAL_CACHE``, default
``~/.cache/fedglobal/derived``) and the cell reads it as
``parquet:<path>``: a plain fedglobal source, so the run folder's
``config.toml`` reloads as it is. Derivations are pure functions of bundled
data (no download) and are written atomically.

The derivations themselves live in :mod:`fedglobal.data.derived` (where
``derived:<name>`` is also a plain ``data.source`` for ``simulate``); here they
are written once as Parquet, which the benchmark's worker processes read fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from fedglobal.data.derived import DERIVED, check_name

__all__ = ["DERIVED", "PREFIX", "derived_path", "resolve_source"]

PREFIX = "derived:"
_VERSION = 1


def _cache_dir() -> Path:
    root = os.environ.get("FEDGLOBAL_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "fedglobal"
    return base / "derived"


def derived_path(name: str) -> Path:
    """The Parquet file of derived table ``name``, written on first use."""
    check_name(name)
    path = _cache_dir() / f"{name}-v{_VERSION}.parquet"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        DERIVED[name]().to_parquet(tmp, index=False)
        os.replace(tmp, path)
    return path


def resolve_source(source: str) -> str:
    """``derived:<name>`` -> ``parquet:<path>``; any other source is returned unchanged."""
    if not source.startswith(PREFIX):
        return source
    return f"parquet:{derived_path(source[len(PREFIX) :].strip())}"
