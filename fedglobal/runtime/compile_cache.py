"""A persistent cache of the XLA programs that cohort training compiles.

Cohort training (:mod:`clients.cohort`) runs each round as one XLA program; on the
2-core machine this project is measured on, compiling it is about 0.6 s of a 5 s
``fedglobal simulate`` (the issue's workload). TensorFlow can save every
executable it compiles and load it again in a later process (``TF_XLA_FLAGS
--tf_xla_persistent_cache_directory``, TensorFlow's
``tensorflow/compiler/jit/device_executable_persistor.h``): an entry is named by
fingerprints of the function's signature and of its HLO module, and is loaded
only if the whole HLO module matches, so a cached program is the program that
would have been compiled, and results are the same to the bit.

TensorFlow writes an entry in place, and a call that reads a partly written
entry fails. So no two processes share the folder TensorFlow writes to:

- published entries live in ``<root>/entries``;
- each process gets a private folder of hard links to them (:func:`enable`);
- at a normal exit its new entries are published with :func:`os.link` (atomic;
  the first publisher of a name wins) and the folder is removed. A process that
  dies without its exit handlers publishes nothing; the next process to start
  removes its folder once its pid is gone.

Where: ``FEDGLOBAL_COMPILE_CACHE`` unset = ``$XDG_CACHE_HOME/fedglobal/xla`` (or
``~/.cache/fedglobal/xla``); ``off`` = no cache; anything else = that folder.
Entries are kept apart per TensorFlow version and CPU (an executable compiled
for one CPU's instruction set must not run on another), at most
:data:`MAX_BYTES` (least recently used removed first). Only this machine's
folders are swept (a home folder may be shared by several machines). A user's
own ``--tf_xla_persistent_cache_directory`` in ``TF_XLA_FLAGS`` is left alone.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import os
import platform
import shutil
import socket
import uuid
from pathlib import Path

ENV = "FEDGLOBAL_COMPILE_CACHE"
#: Set to this process's private folder, so a child process knows the flag is ours.
OWNED_ENV = "FEDGLOBAL_COMPILE_CACHE_DIR"
FLAG = "--tf_xla_persistent_cache_directory"
MAX_BYTES = 1 << 30  # 1 GiB of entries per TensorFlow version and CPU

_state: dict[str, object] = {}


def cache_root() -> Path | None:
    """The cache folder for this TensorFlow and CPU, or None when the cache is off."""
    env = os.environ
    setting = env.get(ENV, "").strip()
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    if setting:
        base = Path(setting).expanduser()
    else:
        base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedglobal" / "xla"
    return base / f"tf-{_tensorflow_version()}-{_cpu_tag()}"


def enable() -> Path | None:
    """Point TensorFlow's XLA cache at a private folder of this process (idempotent).

    Call before TensorFlow compiles its first program: TensorFlow reads
    ``TF_XLA_FLAGS`` once per process. Returns the private folder, or None if the
    cache is off, the user set their own folder, or the cache folder cannot be used.
    """
    if _state.get("pid") == os.getpid():
        return _state.get("private")  # type: ignore[return-value]
    _state.clear()
    _state["pid"] = os.getpid()
    flags = os.environ.get("TF_XLA_FLAGS", "")
    inherited = os.environ.get(OWNED_ENV)
    ours = [f for f in flags.split() if f.startswith(FLAG) and inherited and f.endswith(inherited)]
    if FLAG in flags and not ours:
        return None  # the user's own cache folder
    try:
        root = cache_root()
        if root is None:
            return None
        private = _private_folder(root)
    except (OSError, RuntimeError):  # a read-only or missing home: run without the cache
        return None
    others = [f for f in flags.split() if f not in ours]
    _state.update(private=private, flags=" ".join(others))
    os.environ["TF_XLA_FLAGS"] = " ".join([*others, f"{FLAG}={private}"])
    os.environ[OWNED_ENV] = str(private)
    atexit.register(_publish, private, root / "entries", os.getpid())
    return private


def flags_read() -> None:
    """TensorFlow has read its flags (a program was compiled): take ours out of the
    environment, so processes started from now on do not inherit this process's folder."""
    if _state.get("pid") != os.getpid() or "flags" not in _state:
        return  # not enabled here, or done already
    previous = _state.pop("flags")
    if previous:
        os.environ["TF_XLA_FLAGS"] = previous  # type: ignore[assignment]
    else:
        os.environ.pop("TF_XLA_FLAGS", None)
    os.environ.pop(OWNED_ENV, None)


def _private_folder(root: Path) -> Path:
    from fedglobal.engines.processes import is_alive

    entries = root / "entries"
    entries.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for folder in root.glob("proc-*"):  # left by processes that died: nothing to keep
        _, pid, _, owner = [*folder.name.split("-", 3), "", "", ""][:4]
        if owner == host and pid.isdigit() and not is_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)  # (a shared home: this host's only)
    private = root / f"proc-{os.getpid()}-{uuid.uuid4().hex[:8]}-{host}"
    private.mkdir()
    for entry in entries.iterdir():
        try:
            os.link(entry, private / entry.name)
            os.utime(entry)  # last use: eviction takes the least recently used first
        except OSError:
            continue  # removed meanwhile, or a file system without hard links: compile it
    return private


def _publish(private: Path, entries: Path, pid: int) -> None:
    """Publish this process's new entries (complete: TensorFlow wrote them in a finished
    compile), remove its folder, keep the cache under MAX_BYTES."""
    if os.getpid() != pid or not private.is_dir():
        return
    try:
        for item in private.iterdir():
            if item.suffix != ".pb" or item.stat().st_nlink > 1:
                continue  # a link to a published entry
            try:
                os.link(item, entries / item.name)
            except FileExistsError:
                pass  # another process published the same program first
        _evict(entries, MAX_BYTES)
    except OSError:
        pass  # a cache that cannot be written is a cache miss next time, never an error
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _evict(entries: Path, limit: int) -> None:
    files = []
    for item in entries.iterdir():
        try:
            stat = item.stat()
        except OSError:
            continue
        files.append((stat.st_mtime, stat.st_size, item))
    total = sum(size for _, size, _ in files)
    for _, size, item in sorted(files):
        if total <= limit:
            break
        item.unlink(missing_ok=True)
        total -= size


def _tensorflow_version() -> str:
    for name in ("tensorflow", "tensorflow-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "unknown"


def _cpu_tag() -> str:
    """A short fingerprint of the CPU's instruction-set flags (Linux), else its name."""
    text = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                text = line
                break
    except OSError:
        pass
    text = f"{platform.machine()} {text or platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]
