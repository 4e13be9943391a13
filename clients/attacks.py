"""Simulated malicious regional clients, for robustness benchmarks.

A few regions send poisoned updates; robust aggregation rules (median,
trimmed mean, Krum, Bulyan in :mod:`strategies`) should resist them. Three
client-side attacks from the Byzantine-robust FL literature:

- ``sign-flip``: the client reverses its update and scales it,
  ``w' = w_global - scale * (w_local - w_global)`` (the "reversed gradient"
  attack: Damaskinos et al. 2018, "Asynchronous Byzantine Machine Learning";
  Allen-Zhu et al. 2021 use sign flipping; Li et al. 2019 RSA).
- ``noise``: the client sends a large-norm random update,
  ``w' = w_global + scale * N(0, I)`` (the Gaussian Byzantine vector of
  Blanchard et al. 2017, "Machine Learning with Adversaries: Byzantine
  Tolerant Gradient Descent", section 5).
- ``label-flip``: the client trains honestly on poisoned data, every
  training label ``c`` replaced by ``C - 1 - c`` (Tolpegin et al. 2020,
  "Data Poisoning Attacks Against Federated Learning Systems"; Fang et al. 2020).
  Only the training split is flipped; the region's test split stays clean.

Which regions are malicious is an :class:`AttackPlan`, chosen by whoever
simulates the attack (the benchmark runner picks a seeded subset of regions),
never by the server. The plan is process-wide: :func:`active` sets it for a
block of code, and exports it in the environment variable
``FEDGLOBAL_ATTACK`` (JSON) so that worker processes and regional client
processes started from it see it too. On a real deployment a node would set
that variable itself; the server is not told.

The ClientApp calls two hooks, both no-ops when no plan is active:
:func:`for_training` (swap in label-flipped training data) before ``fit`` and
:func:`poison_update` (sign flip or noise) on its result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedglobal.protocol import SERVER_ROUND_KEY

__all__ = [
    "ENV_VAR",
    "KINDS",
    "AttackPlan",
    "active",
    "applied",
    "current",
    "for_training",
    "logged",
    "poison_update",
    "reset_counts",
]

ENV_VAR = "FEDGLOBAL_ATTACK"
KINDS = ("sign-flip", "noise", "label-flip")
_DEFAULT_SCALE = {"sign-flip": 4.0, "noise": 1.0, "label-flip": 1.0}


@dataclass(frozen=True)
class AttackPlan:
    """Which regions attack, how, and how hard.

    Args:
        kind: ``"sign-flip"``, ``"noise"`` or ``"label-flip"``.
        regions: the malicious regions (names as in the experiment).
        scale: sign flip: the factor on the reversed update; noise: the standard
            deviation of the Gaussian update; unused by label flipping.
        seed: seeds the noise, with the round and the region.
        log_path: if set, every process that applies the attack appends a line
            (kind, region, round) to this file, so whoever planned the attack can
            check it happened, whichever process the clients ran in.
    """

    kind: str
    regions: tuple[str, ...]
    scale: float = 1.0
    seed: int = 0
    log_path: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"attack kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"attack scale must be a finite number > 0, got {self.scale!r}")
        object.__setattr__(self, "regions", tuple(sorted(str(r) for r in self.regions)))

    @classmethod
    def create(
        cls,
        kind: str,
        regions: Sequence[str],
        *,
        scale: float | None = None,
        seed: int = 0,
        log_path: str | None = None,
    ) -> AttackPlan:
        """A plan with the kind's default scale (sign flip 4, noise 1) unless given."""
        return cls(
            kind=kind,
            regions=tuple(regions),
            scale=float(_DEFAULT_SCALE.get(kind, 1.0) if scale is None else scale),
            seed=int(seed),
            log_path=None if log_path is None else str(log_path),
        )

    def attacks(self, region: str) -> bool:
        """Whether ``region`` is malicious under this plan."""
        return region in self.regions

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> AttackPlan:
        try:
            raw = json.loads(text)
            return cls(
                kind=str(raw["kind"]),
                regions=tuple(raw["regions"]),
                scale=float(raw.get("scale", 1.0)),
                seed=int(raw.get("seed", 0)),
                log_path=raw.get("log_path"),
            )
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{ENV_VAR} is not a valid attack plan ({exc}): {text!r}") from None


_lock = threading.Lock()
_active: AttackPlan | None = None
_counts: dict[str, int] = {}
_flipped: dict[tuple[int, str], Any] = {}


def current() -> AttackPlan | None:
    """The process's attack plan: the one :func:`active` set, else ``$FEDGLOBAL_ATTACK``."""
    if _active is not None:
        return _active
    text = os.environ.get(ENV_VAR)
    return AttackPlan.from_json(text) if text else None


@contextlib.contextmanager
def active(plan: AttackPlan | None) -> Iterator[AttackPlan | None]:
    """Make ``plan`` the process's attack plan (and export it) inside the ``with`` block."""
    global _active
    with _lock:
        saved, saved_env = _active, os.environ.get(ENV_VAR)
        _active = plan
        if plan is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = plan.to_json()
        _flipped.clear()
    try:
        yield plan
    finally:
        with _lock:
            _active = saved
            if saved_env is None:
                os.environ.pop(ENV_VAR, None)
            else:
                os.environ[ENV_VAR] = saved_env
            _flipped.clear()


def applied() -> dict[str, int]:
    """How many poisoned updates each attack kind produced in this process."""
    return dict(_counts)


def reset_counts() -> None:
    """Forget the counts of :func:`applied`."""
    _counts.clear()


def _count(plan: AttackPlan, region: str, server_round: int | None = None) -> None:
    with _lock:
        _counts[plan.kind] = _counts.get(plan.kind, 0) + 1
        if plan.log_path:
            with open(plan.log_path, "a", encoding="utf-8") as fh:  # one short line: atomic
                fh.write(f"{plan.kind}\t{region}\t{'' if server_round is None else server_round}\n")


def logged(path: str | os.PathLike[str]) -> list[tuple[str, str, str]]:
    """The (kind, region, round) lines appended to a plan's ``log_path``, from any process."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [tuple(line.rstrip("\n").split("\t")) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def flip_labels(y: np.ndarray, num_classes: int) -> np.ndarray:
    """Label flipping: class ``c`` becomes ``num_classes - 1 - c``."""
    y = np.asarray(y)
    return (num_classes - 1 - y).astype(y.dtype)


def for_training(client: Any) -> Any:
    """The client to train this round: a label-flipped copy for a malicious region.

    ``client`` is a :class:`clients.regional.RegionalClient`. The copy shares
    the process's compiled model (same config and schema), so nothing is
    rebuilt; it is cached per client. Regression targets are negated around
    their mean instead (``2 * mean - y``), the regression analogue.
    """
    plan = current()
    if plan is None or plan.kind != "label-flip" or not plan.attacks(client.region):
        return client
    key = (id(client), plan.to_json())
    cached = _flipped.get(key)
    if cached is not None and cached[0] is client:
        _count(plan, client.region)
        return cached[1]
    from clients.regional import RegionalClient

    arrays = client.arrays
    if client.schema.task == "classification":
        y = flip_labels(arrays.y_train, int(client.schema.num_classes))
    else:
        y = (2.0 * arrays.y_train.mean() - arrays.y_train).astype(arrays.y_train.dtype)
    poisoned = RegionalClient(dataclasses.replace(arrays, y_train=y), client.config, client.schema)
    _flipped[key] = (client, poisoned)
    _count(plan, client.region)
    return poisoned


def _global_weights(message: Any) -> dict[str, np.ndarray]:
    from fedglobal.protocol import from_record

    return from_record(message.content["arrays"])


def poisoned_weights(
    plan: AttackPlan,
    local: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    region: str,
    server_round: int,
) -> dict[str, np.ndarray]:
    """The weights a malicious ``region`` sends instead of ``local`` (sign flip or noise)."""
    rng = np.random.default_rng([plan.seed, server_round, zlib.crc32(region.encode())])
    out: dict[str, np.ndarray] = {}
    for name, w in local.items():
        g = np.asarray(global_weights.get(name, w))
        if not np.issubdtype(np.asarray(w).dtype, np.floating):
            out[name] = np.asarray(w)
            continue
        if plan.kind == "sign-flip":
            value = g - plan.scale * (np.asarray(w) - g)
        else:  # noise
            value = g + plan.scale * rng.standard_normal(g.shape)
        out[name] = np.asarray(value, dtype=np.asarray(w).dtype)
    return out


def poison_update(result: Any, message: Any, region: str) -> Any:
    """The FitResult a client sends: poisoned if ``region`` attacks with an update attack.

    Args:
        result: the honest :class:`clients.regional.FitResult`.
        message: the train Message (its arrays are the round's global weights).
        region: the client's region.
    """
    plan = current()
    if plan is None or plan.kind not in ("sign-flip", "noise") or not plan.attacks(region):
        return result
    server_round = int(message.content["config"].get(SERVER_ROUND_KEY, 0))
    weights = poisoned_weights(plan, result.weights, _global_weights(message), region, server_round)
    _count(plan, region, server_round)
    return dataclasses.replace(result, weights=weights)
