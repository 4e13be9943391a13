"""Strategies by name: ``strategies.get("fedavg", **params)``.

``get`` resolves, Keras-style, a name (case-insensitive), a dict
``{"name": ..., **params}`` (an experiment file's ``[strategy]`` table) or a
Strategy instance (returned as is). The experiment file's ``name = "fedavg"`` and
``get("fedavg")`` in code go through the same table.

A name with a colon is a *component reference* to a strategy class of your own,
a subclass of :class:`strategies.FedAvg`: ``"mypkg.strategies:SqrtFedAvg"`` (an
importable module) or ``"path/to/file.py:SqrtFedAvg"`` (a Python file; relative
to the current folder here, to the experiment file's folder in an experiment
file). See :func:`load_reference`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from flwr.serverapp.strategy import Strategy

from .asynchronous import FedAsync, FedBuff
from .byzantine import Bulyan, FedMedian, FedTrimmedAvg, Krum, MultiKrum
from .ditto import Ditto
from .dp import DPFedAvg
from .errors import InvalidParameterError, StrategyError, UnknownStrategyError, nearest
from .fedavg import FedAvg
from .fednova import FedNova
from .fedopt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from .fedprox import FedProx
from .hierfavg import HierFAVG
from .layerwise import FedBN, FedPer, Layerwise
from .qffl import QFFL
from .scaffold import Scaffold

__all__ = [
    "accepted_params",
    "available",
    "get",
    "is_reference",
    "load_reference",
    "register",
    "strategy_class",
]

S = TypeVar("S", bound=type[Strategy])

_REGISTRY: dict[str, type[Strategy]] = {}


def register(name: str) -> Callable[[S], S]:
    """Class decorator registering a Strategy subclass under ``name`` (case-insensitive)."""
    key = name.lower()

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise StrategyError(f"register({name!r}): {cls!r} is not a flwr Strategy subclass")
        if key in _REGISTRY and _REGISTRY[key] is not cls:
            raise StrategyError(
                f"strategy name {key!r} is already registered to {_REGISTRY[key].__qualname__}"
            )
        _REGISTRY[key] = cls
        return cls

    return decorator


def available() -> list[str]:
    """Registered strategy names, sorted."""
    return sorted(_REGISTRY)


def accepted_params(cls: type) -> list[str]:
    """Keyword parameters ``cls`` accepts, following ``**kwargs`` up the MRO."""
    names: list[str] = []
    fixed: set[str] = set(getattr(cls, "fixed_params", ()))
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(vars(klass)["__init__"]).parameters.values()
        var_kw = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                var_kw = True
            elif p.name != "self" and p.kind is not p.VAR_POSITIONAL and p.name not in names:
                names.append(p.name)
        if not var_kw:
            break
    return [n for n in names if n not in fixed]


def is_reference(name: str) -> bool:
    """Whether ``name`` is a ``"module:attr"`` or ``"file.py:attr"`` reference, not a name."""
    return ":" in name


def _split_reference(reference: str) -> tuple[str, str]:
    where, _, attribute = reference.rpartition(":")  # keeps a drive letter (C:)
    if not where or not attribute.isidentifier():
        raise ValueError(
            f"{reference!r} is not a component reference: expected 'module:attr' "
            "(e.g. 'mypkg.mod:MyClass') or 'path/to/file.py:attr'"
        )
    return where, attribute


def _file_module(path: Path) -> Any:
    """Import the Python file ``path`` once per process, under a name derived from it."""
    path = path.resolve()
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:12]
    name = f"_fedglobal_user_{path.stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise ValueError(f"no such Python file: {str(path)!r}")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import {str(path)!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it, as import does (dataclasses need it)
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_reference(reference: str) -> Any:
    """The object a component reference names, importing its module.

    Two forms:

    - ``"package.module:attr"``: ``attr`` of an importable module (installed, or
      on ``sys.path``), e.g. ``"keras.callbacks:TerminateOnNaN"``;
    - ``"path/to/file.py:attr"``: ``attr`` of a Python file, relative to the
      current folder unless absolute. Each file is imported once per process.

    Raises:
        ValueError: the text is not a reference, or the module cannot be
            imported (the import's own error is included), or it has no ``attr``.
    """
    where, attribute = _split_reference(reference)
    try:
        if where.endswith(".py") or "/" in where or "\\" in where:
            module = _file_module(Path(where).expanduser())
        else:
            module = importlib.import_module(where)
    except ValueError as exc:
        raise ValueError(f"cannot load {reference!r}: {exc}") from exc
    except Exception as exc:  # the user's module failed to import: say which and why
        raise ValueError(
            f"cannot load {reference!r}: importing {where!r} failed with "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        return getattr(module, attribute)
    except AttributeError:
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        hint = nearest(attribute, public)
        suggestion = f"; did you mean {hint!r}?" if hint else ""
        raise ValueError(
            f"cannot load {reference!r}: {where!r} has no {attribute!r}{suggestion}"
        ) from None


def _from_reference(reference: str) -> type[Strategy]:
    """The strategy class a component reference names (a subclass of FedAvg)."""
    try:
        cls = load_reference(reference)
    except ValueError as exc:
        raise StrategyError(
            f"strategy name: {exc}; a strategy reference is 'module:Class' or "
            "'path/to/file.py:Class' naming a subclass of strategies.FedAvg"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, FedAvg)):
        raise StrategyError(
            f"strategy {reference!r} is {cls!r}, not a subclass of strategies.FedAvg: "
            "fedglobal's server gives every strategy its seed, timeout and metric "
            "aggregators and relies on FedAvg's reply checks, so subclass strategies.FedAvg "
            "(or another fedglobal strategy)"
        )
    return cls


def _shown(name: str) -> str:
    """A name as errors show it: registry names lower-case, references as written."""
    return name if is_reference(name) else name.lower()


def _lookup(name: str) -> type[Strategy]:
    if is_reference(name):
        return _from_reference(name)
    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise UnknownStrategyError(name, available()) from None


def strategy_class(name: str) -> type[Strategy]:
    """The class a registered name or a component reference resolves to.

    Raises:
        UnknownStrategyError: the name is not registered.
        StrategyError: a reference that cannot be loaded.
    """
    return _lookup(name)


def get(identifier: str | Mapping[str, Any] | Strategy, **params: Any) -> Strategy:
    """Return a strategy from a name, a ``{"name": ..., **params}`` dict, or an instance.

    Raises:
        UnknownStrategyError: the name is not registered (lists names, suggests one).
        InvalidParameterError: a parameter the strategy does not accept, or a bad value.
        StrategyError: the identifier cannot be interpreted.
    """
    if isinstance(identifier, Strategy):
        if params:
            raise InvalidParameterError(
                f"got a {type(identifier).__name__} instance and parameters "
                f"{sorted(params)}; pass either an instance or a name with parameters"
            )
        return identifier
    if isinstance(identifier, Mapping):
        spec = dict(identifier)
        if "name" not in spec:
            raise StrategyError(
                f"strategy dict needs a 'name' key (one of {', '.join(available())}); "
                f"got keys {sorted(spec)}"
            )
        name = spec.pop("name")
        params = {**spec, **params}
    elif isinstance(identifier, str):
        name = identifier
    else:
        raise StrategyError(
            f"Could not interpret strategy identifier {identifier!r}: expected a name "
            f"({', '.join(available())}), a dict with 'name', or a Strategy instance"
        )
    if not isinstance(name, str):
        raise StrategyError(f"strategy name must be a string, got {name!r}")
    cls = _lookup(name)
    accepted = accepted_params(cls)
    unknown = [p for p in params if p not in accepted]
    if unknown:
        hint = nearest(unknown[0], accepted)
        suggestion = f" Did you mean {hint!r}?" if hint else ""
        raise InvalidParameterError(
            f"strategy {_shown(name)!r} does not accept parameter {unknown[0]!r}.{suggestion} "
            f"Accepted parameters: {', '.join(accepted)}"
        )
    try:
        return cls(**params)
    except TypeError as exc:
        raise InvalidParameterError(
            f"strategy {_shown(name)!r}: {exc}. Accepted parameters: {', '.join(accepted)}"
        ) from exc


register("fedavg")(FedAvg)
register("fedprox")(FedProx)
register("dpfedavg")(DPFedAvg)
register("fedavgm")(FedAvgM)
register("fedadagrad")(FedAdagrad)
register("fedadam")(FedAdam)
register("fedyogi")(FedYogi)
register("fedmedian")(FedMedian)
register("fedtrimmedavg")(FedTrimmedAvg)
register("krum")(Krum)
register("multikrum")(MultiKrum)
register("bulyan")(Bulyan)
register("layerwise")(Layerwise)
register("fedper")(FedPer)
register("fedbn")(FedBN)
register("fedbuff")(FedBuff)
register("fedasync")(FedAsync)
register("hierfavg")(HierFAVG)
register("qffl")(QFFL)
register("fednova")(FedNova)
register("scaffold")(Scaffold)
register("ditto")(Ditto)
