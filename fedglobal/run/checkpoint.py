"""Resumable checkpoints: ``resume.npz`` in the run folder (issue 6).

Every ``[server] checkpoint_every`` rounds, and after the last round, the
ServerApp writes one self-contained file, ``<run>/resume.npz``, holding all a
run needs to continue as if it had never stopped:

- the global weights (``weights/<variable path>``) and the round they are from;
- the strategy's ``state_dict()`` (server optimizer moments, logs...);
- the history rows so far and the monitor's tables (rounds.csv, layer norms,
  byte counters, hook state such as early stopping);
- each region's ClientApp state (``context.state``: local layers kept between
  rounds, compression residuals), serialized Flower RecordDicts;
- the global NumPy and Python RNG states, the resolved experiment and schema.

The file is an ``.npz`` (a zip of ``.npy`` members). The JSON entry ``meta``
holds everything that is not an array; ``sha256`` is the SHA-256 digest of
every other entry (name, dtype, shape, bytes), checked on load together with
the zip's own CRCs.

Writes are atomic: the new checkpoint goes to a temporary file in the run
folder, is fsynced, the current ``resume.npz`` is hard-linked (else copied)
to ``resume.prev.npz``, and the new file is renamed over ``resume.npz``
(``os.replace``), then the folder is fsynced. At every instant ``resume.npz``
is a complete checkpoint (old or new) and ``resume.prev.npz`` the one before.

Loading a run folder reads ``resume.npz``. If it is missing, torn or corrupt,
a warning names it and what is wrong, and ``resume.prev.npz`` is used when it
is good (the run then redoes one checkpoint interval more); if neither is good,
:class:`~fedglobal.errors.CheckpointError` names both files. A checkpoint file
given by its own path is read strictly, with no fallback.

``checkpoint.npz`` (the final weights and ``__round__``, written at the end
of the run) keeps its meaning and format.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import threading
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedglobal.errors import CheckpointError, ConfigError

__all__ = [
    "CHECKPOINT",
    "FORMAT",
    "PREVIOUS",
    "Checkpoint",
    "changed_keys",
    "check_compatible",
    "load",
    "pending",
    "read",
    "resuming",
    "rng_state",
    "set_rng_state",
    "write",
]

log = logging.getLogger(__name__)

#: File name of the latest checkpoint in a run folder.
CHECKPOINT = "resume.npz"
#: File name of the checkpoint before it (kept until the next one is complete).
PREVIOUS = "resume.prev.npz"
#: Format version written into ``meta``.
FORMAT = 1

_META = "meta"
_DIGEST = "sha256"
_WEIGHTS = "weights/"
_STATE = "state/"
_CLIENT = "client/"

#: Keys of the experiment that may differ between the checkpointed run and the resumed one.
RESUMABLE_CHANGES = (
    "experiment.rounds",
    "experiment.engine",
    "experiment.workers",
    "experiment.output_dir",
    "server.checkpoint_every",
)


@dataclass
class Checkpoint:
    """The contents of one ``resume.npz``.

    Attributes:
        round: the last completed round.
        weights: the global named weights after that round.
        strategy_state: the strategy's ``state_dict()`` (None if it has none).
        config_toml: the resolved experiment of the run.
        schema_json: the federated schema of the run.
        history: history rows ``(round, region, split, metric, value)``.
        monitor: the monitor's state (:meth:`fedglobal.server.monitor.RunMonitor.state_dict`).
        rng: global RNG states (:func:`rng_state`).
        client_state: region -> its ClientApp state (a serialized RecordDict).
        extra: other JSON values (e.g. ``round_end_s``, whether client state is complete).
        path: the file it was read from (None before it is written).
    """

    round: int
    weights: dict[str, np.ndarray]
    strategy_state: dict[str, Any] | None
    config_toml: str
    schema_json: str
    history: list[tuple[int, str, str, str, float]] = field(default_factory=list)
    monitor: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    client_state: dict[str, bytes] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


# ---- the resume request of this process (in-process engine) ------------------------

_lock = threading.Lock()
_pending: list[Path | None] = []


@contextlib.contextmanager
def resuming(path: str | Path | None) -> Iterator[None]:
    """Within the block, a ServerApp in this process resumes from checkpoint ``path``.

    Process-wide (like :func:`fedglobal.server.callbacks.hooks.active`), so the ServerApp may run
    in any thread of this process: the in-process engine.
    """
    with _lock:
        _pending.append(None if path is None else Path(path))
    try:
        yield
    finally:
        with _lock:
            _pending.pop()


def pending() -> Path | None:
    """The checkpoint file the ServerApp should resume from, if any (see :func:`resuming`)."""
    with _lock:
        return _pending[-1] if _pending else None


# ---- RNG ---------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """The global NumPy and Python RNG states, as JSON values.

    Sampling and all client randomness derive from (seed, round, region) and do
    not depend on these; they are saved so that code using the global RNGs
    (hooks, user code) continues the same stream.
    """
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, py_gauss = random.getstate()
    return {
        "numpy": [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), py_gauss],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    if "numpy" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


# ---- encoding --------------------------------------------------------------------------


def _encode(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """JSON-able copy of ``value``; every ndarray is moved into ``arrays`` and referenced."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise CheckpointError("strategy state holds an object array, which cannot be saved")
        key = f"{_STATE}{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, arrays) for k, v in value.items()}
        return {"__items__": [[_encode(k, arrays), _encode(v, arrays)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [_encode(v, arrays) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise CheckpointError(f"cannot save a {type(value).__name__} in a checkpoint: {value!r}")


def _decode(value: Any, entries: Mapping[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return np.array(entries[value["__array__"]], copy=True)
        if set(value) == {"__items__"}:
            return {_decode(k, entries): _decode(v, entries) for k, v in value["__items__"]}
        return {k: _decode(v, entries) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, entries) for v in value]
    return value


def _digest(entries: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(entries):
        if key == _DIGEST:
            continue
        value = np.ascontiguousarray(entries[key])
        h.update(f"{key}\0{value.dtype.str}\0{value.shape}\0".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _bytes_array(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def _entries(ckpt: Checkpoint) -> dict[str, np.ndarray]:
    entries: dict[str, np.ndarray] = {}
    for name, value in ckpt.weights.items():
        entries[f"{_WEIGHTS}{name}"] = np.asarray(value)
    state_arrays: dict[str, np.ndarray] = {}
    strategy_state = _encode(ckpt.strategy_state, state_arrays)
    monitor = _encode(ckpt.monitor, state_arrays)
    extra = _encode(ckpt.extra, state_arrays)
    entries.update(state_arrays)
    clients = {}
    for i, (region, data) in enumerate(sorted(ckpt.client_state.items())):
        key = f"{_CLIENT}{i}"
        entries[key] = _bytes_array(data)
        clients[region] = key
    meta = {
        "format": FORMAT,
        "round": int(ckpt.round),
        "weights": list(ckpt.weights),
        "strategy_state": strategy_state,
        "config_toml": ckpt.config_toml,
        "schema_json": ckpt.schema_json,
        "history": [list(row) for row in ckpt.history],
        "monitor": monitor,
        "rng": ckpt.rng,
        "clients": clients,
        "extra": extra,
    }
    entries[_META] = _bytes_array(json.dumps(meta).encode("utf-8"))
    entries[_DIGEST] = _bytes_array(_digest(entries).encode("ascii"))
    return entries


# ---- writing -----------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write(run_dir: str | Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` atomically as ``<run_dir>/resume.npz``; the previous one is kept.

    Returns the path written. See the module docstring for the steps.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    target, previous = run_dir / CHECKPOINT, run_dir / PREVIOUS
    entries = _entries(ckpt)
    tmp = run_dir / f".{CHECKPOINT}.{os.getpid()}.tmp"
    try:
        with tmp.open("wb") as fh:
            np.savez(fh, **entries)
            fh.flush()
            os.fsync(fh.fileno())
        if target.exists():
            prev_tmp = run_dir / f".{PREVIOUS}.{os.getpid()}.tmp"
            prev_tmp.unlink(missing_ok=True)
            try:
                os.link(target, prev_tmp)
            except OSError:  # no hard links here: copy
                shutil.copyfile(target, prev_tmp)
            os.replace(prev_tmp, previous)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(run_dir)
    ckpt.path = target
    return target


# ---- reading -----------------------------------------------------------------------


def read(path: str | Path) -> Checkpoint:
    """Read and verify one checkpoint file.

    Raises:
        CheckpointError: the file is missing, torn (not a complete zip), corrupt
            (CRC or SHA-256 mismatch), or not a fedglobal checkpoint; the message
            names the file and what is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            entries = {key: npz[key] for key in npz.files}
    except Exception as exc:  # zipfile, numpy and OS errors alike mean: unreadable
        raise CheckpointError(
            f"checkpoint {path} is torn or corrupt: cannot be read ({type(exc).__name__}: {exc})"
        ) from exc
    for key in (_META, _DIGEST):
        if key not in entries:
            raise CheckpointError(
                f"checkpoint {path} is not a fedglobal resume checkpoint: no {key!r} entry "
                f"(entries: {sorted(entries)[:5]})"
            )
    stored = entries[_DIGEST].tobytes().decode("ascii", errors="replace")
    actual = _digest(entries)
    if stored != actual:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its contents hash to sha256 {actual[:16]}..., "
            f"but the file records {stored[:16]}..."
        )
    try:
        meta = json.loads(entries[_META].tobytes().decode("utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: unreadable meta ({exc})") from exc
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {meta.get('format')!r}; this fedglobal reads {FORMAT}"
        )
    try:
        return Checkpoint(
            round=int(meta["round"]),
            weights={name: entries[f"{_WEIGHTS}{name}"] for name in meta["weights"]},
            strategy_state=_decode(meta["strategy_state"], entries),
            config_toml=str(meta["config_toml"]),
            schema_json=str(meta["schema_json"]),
            history=[tuple(row) for row in meta["history"]],
            monitor=_decode(meta["monitor"], entries),
            rng=dict(meta["rng"]),
            client_state={r: entries[key].tobytes() for r, key in meta["clients"].items()},
            extra=_decode(meta.get("extra", {}), entries),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: missing or malformed {exc}") from exc


def load(path: str | Path) -> Checkpoint:
    """The checkpoint to resume from: ``path`` is a run folder or a checkpoint file.

    For a run folder, ``resume.npz``; if it is missing or unreadable and
    ``resume.prev.npz`` is good, a warning says so and the previous one is used.

    Raises:
        CheckpointError: no checkpoint, or none that is intact (names each file and why).
    """
    path = Path(path)
    if path.is_file():
        return read(path)
    if not path.is_dir():
        raise CheckpointError(f"cannot resume from {path}: no such run folder or checkpoint file")
    latest, previous = path / CHECKPOINT, path / PREVIOUS
    if not latest.exists() and not previous.exists():
        raise CheckpointError(
            f"cannot resume from {path}: it has no checkpoint ({CHECKPOINT}); a run writes one "
            "every [server] checkpoint_every rounds (not when it is 0)"
        )
    try:
        return read(latest)
    except CheckpointError as exc:
        if not previous.exists():
            raise
        try:
            ckpt = read(previous)
        except CheckpointError as prev_exc:
            raise CheckpointError(
                f"cannot resume from {path}: no intact checkpoint: {exc}; and {prev_exc}"
            ) from exc
        log.warning(
            "%s; resuming from the previous checkpoint %s (round %d)", exc, previous, ckpt.round
        )
        return ckpt


# ---- compatibility -----------------------------------------------------------------


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{name}."))
        else:
            out[name] = value
    return out


def changed_keys(ckpt: Checkpoint, config_toml: str) -> list[str]:
    """The dotted keys, other than :data:`RESUMABLE_CHANGES`, that differ from the checkpoint's."""
    old = _flat(tomllib.loads(ckpt.config_toml))
    new = _flat(tomllib.loads(config_toml))
    return sorted(
        key
        for key in set(old) | set(new)
        if old.get(key) != new.get(key) and key not in RESUMABLE_CHANGES
    )


def check_compatible(ckpt: Checkpoint, config_toml: str) -> None:
    """Refuse to resume a run under a different experiment.

    Only :data:`RESUMABLE_CHANGES` may differ, and ``experiment.rounds`` must
    leave rounds to run.

    Raises:
        ConfigError: naming each key that differs, with both values.
    """
    old = _flat(tomllib.loads(ckpt.config_toml))
    new = _flat(tomllib.loads(config_toml))
    changed = changed_keys(ckpt, config_toml)
    if changed:
        shown = "; ".join(
            f"{key}: {old.get(key, '(unset)')!r} in the checkpoint, {new.get(key, '(unset)')!r} now"
            for key in changed[:8]
        )
        raise ConfigError(
            f"cannot resume from {ckpt.path}: the experiment differs from the checkpointed "
            f"run's in {len(changed)} key(s): {shown}. Resume with the same experiment "
            f"(only {', '.join(RESUMABLE_CHANGES)} may change)"
        )
    rounds = int(new.get("experiment.rounds", 0))
    if rounds <= ckpt.round:
        raise ConfigError(
            f"cannot resume from {ckpt.path}: it is at round {ckpt.round} and the experiment "
            f"has {rounds} rounds; nothing left to run (raise experiment.rounds to continue)"
        )
