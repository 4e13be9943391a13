"""Benchmark suite files: parsing, validation with clear errors, and the grid of cells.

A suite is a TOML file (``experiments/benchmarks/<suite>.toml``)::

    [suite]
    name = "fedprox_synthetic"
    description = "..."
    seeds = [0, 1]                 # every cell runs once per seed
    metric = "accuracy"            # headline metric (default: accuracy / r2 by task)
    target = 0.6                   # rounds-to-target threshold on the metric (optional)
    reference = "Li et al. 2020"   # where published results come from (optional)

    [base]                         # an experiment shared by every cell (same sections
    [base.experiment]              # and keys as an experiment file)
    rounds = 20
    [base.data]
    source = "synthetic:fedprox"
    ...
    [base.strategy]                # parameters given to every federated strategy
    fraction_train = 0.34

    [[datasets]]                   # the data settings (one plot panel each)
    label = "Synthetic(1,1)"
    data = { synthetic_alpha = 1.0, synthetic_beta = 1.0 }   # any section: partial override
    target = 0.5                   # optional per-dataset metric / target

    [[strategies]]                 # the compared strategies (one line each)
    label = "FedProx μ=1"
    name = "fedprox"               # a name in strategies.available()
    proximal_mu = 1.0              # its parameters
    [[strategies]]
    label = "local only"
    baseline = "local"             # or "centralised": baselines, not strategies

    [[conditions]]                 # optional third axis (one plot row each)
    label = "90% stragglers"
    strategy = { stragglers = 0.9 }    # given to the strategies that accept them
    attack = { kind = "sign-flip", fraction = 0.2 }   # malicious clients (clients.attacks)

    [[exclude]]                    # cells to skip: every given glob must match the label
    strategy = "FedProx μ=0"
    condition = "0% stragglers"

    [full]                         # the --full scale: replaces seeds (and exclude),
    seeds = [0, 1, 2, 3, 4]        # overrides sections
    experiment = { rounds = 200 }

A cell's experiment is built in this order: ``[base]``, the ``[full]`` overrides
(with ``--full``), the dataset's overrides (and its own ``full`` table), the
strategy, the condition, then the seed. Mistakes in the suite file's structure
raise :class:`SuiteError` naming the file, the entry and the key. A cell whose
experiment is invalid (for instance a strategy that is not registered) is not
a suite error: it becomes a failed row of the results table.
"""

from __future__ import annotations

import copy
import difflib
import fnmatch
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedglobal.errors import FedGlobalError

__all__ = [
    "BASELINES",
    "SECTIONS",
    "Cell",
    "Condition",
    "Dataset",
    "StrategySpec",
    "Suite",
    "SuiteError",
    "load_suite",
]

#: Experiment sections a suite may override (unknown ones are rejected by the config).
SECTIONS = (
    "experiment",
    "data",
    "model",
    "client",
    "strategy",
    "engine",
    "server",
    "output",
    "geo",
)
BASELINES = ("local", "centralised")
ATTACK_KINDS = ("sign-flip", "noise", "label-flip")
_BASELINE_ALIASES = {"local": "local", "local-only": "local", "centralised": "centralised"}
_BASELINE_ALIASES["centralized"] = "centralised"

_SUITE_KEYS = ("name", "description", "seeds", "metric", "target", "reference", "notes")
_DATASET_KEYS = ("label", "metric", "target", "full", *SECTIONS)
_CONDITION_KEYS = ("label", "attack", "full", *SECTIONS)
_ATTACK_KEYS = ("kind", "fraction", "scale")
_EXCLUDE_KEYS = ("dataset", "condition", "strategy")
_FULL_KEYS = ("seeds", "exclude", *SECTIONS)
_TOP_KEYS = ("suite", "base", "datasets", "strategies", "conditions", "exclude", "full")
METRICS = ("loss", "accuracy", "precision", "recall", "f1", "mae", "rmse", "r2")
LOWER_IS_BETTER = frozenset({"loss", "mae", "rmse"})


class SuiteError(FedGlobalError, ValueError):
    """A benchmark suite file is invalid (names the file, the entry and the key)."""


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_keys(raw: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in raw:
        if key not in known:
            raise SuiteError(
                f"{where}: unknown key {key!r}{_suggest(str(key), known)} "
                f"(allowed: {', '.join(known)})"
            )


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SuiteError(f"{where} must be a table, got {value!r}")
    return dict(value)


def _label(raw: Mapping[str, Any], where: str) -> str:
    label = raw.get("label")
    if not isinstance(label, str) or not label.strip():
        raise SuiteError(f"{where} needs a non-empty string 'label'")
    return label.strip()


def _sections(raw: Mapping[str, Any], where: str, *, skip: Iterable[str] = ()) -> dict:
    """The section overrides of an entry: ``{section: {key: value}}``."""
    out: dict[str, dict[str, Any]] = {}
    for section in SECTIONS:
        if section in raw and section not in skip:
            out[section] = _table(raw[section], f"{where}.{section}")
    return out


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{where} must be a non-empty list of integers >= 0, got {value!r}")
    for seed in value:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise SuiteError(f"{where}: seed {seed!r} must be an integer >= 0")
    if len(set(value)) != len(value):
        raise SuiteError(f"{where}: seeds {value} repeat a value")
    return tuple(value)


def _metric(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if value not in METRICS:
        raise SuiteError(
            f"{where}: metric {value!r} is not one of {', '.join(METRICS)}"
            f"{_suggest(str(value), METRICS)}"
        )
    return str(value)


def _target(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SuiteError(f"{where}: target {value!r} must be a number")
    return float(value)


def merge(base: Mapping[str, Any], *overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Merge section tables: later overrides win key by key (a deep copy)."""
    out = copy.deepcopy(dict(base))
    for override in overrides:
        for section, values in override.items():
            if isinstance(values, Mapping):
                out.setdefault(section, {})
                out[section] = {**out[section], **copy.deepcopy(dict(values))}
            else:
                out[section] = copy.deepcopy(values)
    return out


def slug(text: str) -> str:
    """A file-name-safe version of a label (``FedProx μ=1`` -> ``fedprox-mu-1``)."""
    text = text.replace("μ", "mu").replace("%", "pct")
    text = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()
    return text or "x"


@dataclass(frozen=True)
class Dataset:
    """A data setting: a label, section overrides, and its headline metric and target."""

    label: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: str | None = None
    target: float | None = None
    full: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class StrategySpec:
    """A compared strategy (registry name and parameters) or a baseline."""

    label: str
    name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None

    @property
    def kind(self) -> str:
        """``federated``, ``local-only`` or ``centralised``."""
        if self.baseline == "local":
            return "local-only"
        return self.baseline or "federated"


@dataclass(frozen=True)
class Condition:
    """A condition (third axis): overrides, strategy parameters and an optional attack."""

    label: str
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    strategy_params: dict[str, Any] = field(default_factory=dict)
    attack: dict[str, Any] | None = None
    full: dict[str, dict[str, Any]] = field(default_factory=dict)


NO_CONDITION = Condition(label="-")


@dataclass(frozen=True)
class Cell:
    """One run of the grid: dataset x condition x strategy x seed."""

    dataset: Dataset
    condition: Condition
    strategy: StrategySpec
    seed: int

    @property
    def key(self) -> str:
        """A unique, readable id: ``dataset | condition | strategy | seed``."""
        return (
            f"{self.dataset.label} | {self.condition.label} | {self.strategy.label} | {self.seed}"
        )

    @property
    def slug(self) -> str:
        """The cell's run-folder name."""
        parts = [self.dataset.label, self.strategy.label, f"s{self.seed}"]
        if self.condition != NO_CONDITION:
            parts.insert(1, self.condition.label)
        return "_".join(slug(p) for p in parts)


@dataclass(frozen=True)
class Suite:
    """A parsed, validated benchmark suite (see the module docstring for the file format)."""

    name: str
    path: Path
    base: dict[str, dict[str, Any]]
    datasets: tuple[Dataset, ...]
    strategies: tuple[StrategySpec, ...]
    conditions: tuple[Condition, ...] = (NO_CONDITION,)
    seeds: tuple[int, ...] = (0,)
    metric: str | None = None
    target: float | None = None
    description: str = ""
    reference: str = ""
    notes: str = ""
    exclude: tuple[dict[str, str], ...] = ()
    full: bool = False

    @property
    def base_dir(self) -> Path:
        """Relative data paths in the suite resolve against the suite file's folder."""
        return self.path.parent

    def metric_for(self, dataset: Dataset, task: str) -> str:
        """The headline metric of a dataset: its own, the suite's, else by task."""
        return dataset.metric or self.metric or ("accuracy" if task == "classification" else "r2")

    def target_for(self, dataset: Dataset) -> float | None:
        """The rounds-to-target threshold of a dataset (None: not reported)."""
        return dataset.target if dataset.target is not None else self.target

    def excluded(self, dataset: Dataset, condition: Condition, strategy: StrategySpec) -> bool:
        """Whether an ``[[exclude]]`` entry removes this combination."""
        labels = {
            "dataset": dataset.label,
            "condition": condition.label,
            "strategy": strategy.label,
        }
        for rule in self.exclude:
            if all(
                fnmatch.fnmatchcase(labels[k].lower(), pattern.lower())
                for k, pattern in rule.items()
            ):
                return True
        return False

    def cells(self) -> list[Cell]:
        """Every cell, ordered dataset, seed, condition, strategy: consecutive cells share
        the data and the compiled model (the ClientApp caches them per process)."""
        out = []
        for dataset in self.datasets:
            for seed in self.seeds:
                for condition in self.conditions:
                    for strategy in self.strategies:
                        if not self.excluded(dataset, condition, strategy):
                            out.append(Cell(dataset, condition, strategy, seed))
        return out

    def experiment(self, cell: Cell) -> dict[str, Any]:
        """The experiment (a nested mapping, not yet validated) of one cell."""
        raw = merge(self.base, cell.dataset.overrides, cell.condition.overrides)
        strategy_params = dict(raw.pop("strategy", {}))
        if cell.strategy.baseline is None:
            strategy_params.update(cell.strategy.params)
            accepted = _accepted_params(str(cell.strategy.name))
            for key, value in cell.condition.strategy_params.items():
                if accepted is None or key in accepted:
                    strategy_params[key] = value
            raw["strategy"] = {"name": cell.strategy.name, **strategy_params}
        else:
            # Baselines train without a server; keep a valid [strategy] for the config.
            raw["strategy"] = {"name": "fedavg", **_fedavg_params(strategy_params)}
        experiment = raw.setdefault("experiment", {})
        experiment["seed"] = cell.seed
        experiment.setdefault("name", f"{slug(self.name)}-{cell.slug}")
        return raw


def _accepted_params(name: str) -> list[str] | None:
    """The parameters a registered strategy accepts; None if it is not registered."""
    import strategies
    from strategies.errors import StrategyError
    from strategies.registry import accepted_params

    try:
        return accepted_params(type(strategies.get(name)))
    except StrategyError:  # not registered (yet), or it needs parameters to be built
        return None


def _fedavg_params(params: Mapping[str, Any]) -> dict[str, Any]:
    accepted = _accepted_params("fedavg") or []
    return {k: v for k, v in params.items() if k in accepted}


# -- parsing -----------------------------------------------------------------------------


def load_suite(
    path: str | Path,
    *,
    full: bool = False,
    seeds: Sequence[int] | None = None,
) -> Suite:
    """Read and validate a suite file.

    Args:
        path: the suite's TOML file.
        full: apply the ``[full]`` scale (seeds and section overrides).
        seeds: replace the suite's seeds (after ``full``).

    Raises:
        SuiteError: the file is missing, not TOML, or has an invalid entry.
    """
    p = Path(path)
    if not p.is_file():
        hint = ""
        folder = p.parent if str(p.parent) else Path(".")
        if folder.is_dir():
            known = sorted(f.stem for f in folder.glob("*.toml"))
            hint = _suggest(p.stem, known) + (
                f" (suites there: {', '.join(known)})" if known else ""
            )
        raise SuiteError(f"benchmark suite file not found: {str(p)!r}{hint}")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{p}: not valid TOML: {exc}") from None
    return parse_suite(raw, path=p, full=full, seeds=seeds)


def parse_suite(
    raw: Mapping[str, Any],
    *,
    path: str | Path = "suite.toml",
    full: bool = False,
    seeds: Sequence[int] | None = None,
) -> Suite:
    """Validate a suite given as a mapping (as read from TOML); see :func:`load_suite`."""
    p = Path(path).resolve()
    where = p.name
    _check_keys(raw, _TOP_KEYS, where)
    head = _table(raw.get("suite", {}), f"{where} [suite]")
    _check_keys(head, _SUITE_KEYS, f"{where} [suite]")
    name = head.get("name", p.stem)
    if not isinstance(name, str) or not name.strip():
        raise SuiteError(f"{where} [suite]: name must be a non-empty string, got {name!r}")
    suite_seeds = _seeds(head.get("seeds", [0]), f"{where} [suite] seeds")

    base = _table(raw.get("base", {}), f"{where} [base]")
    _check_keys(base, SECTIONS, f"{where} [base]")
    base = {k: _table(v, f"{where} [base.{k}]") for k, v in base.items()}

    full_raw = _table(raw.get("full", {}), f"{where} [full]")
    _check_keys(full_raw, _FULL_KEYS, f"{where} [full]")
    if full:
        base = merge(base, _sections(full_raw, f"{where} [full]"))
        if "seeds" in full_raw:
            suite_seeds = _seeds(full_raw["seeds"], f"{where} [full] seeds")
    if seeds is not None:
        suite_seeds = _seeds(list(seeds), "--seeds")

    datasets = tuple(
        _dataset(d, i, where, full) for i, d in enumerate(_list(raw, "datasets", where))
    )
    strategies = tuple(
        _strategy(s, i, where) for i, s in enumerate(_list(raw, "strategies", where))
    )
    conditions_raw = raw.get("conditions")
    conditions: tuple[Condition, ...] = (NO_CONDITION,)
    if conditions_raw is not None:
        conditions = tuple(
            _condition(c, i, where, full) for i, c in enumerate(_list(raw, "conditions", where))
        )
    for kind, items in (
        ("datasets", datasets),
        ("strategies", strategies),
        ("conditions", conditions),
    ):
        labels = [item.label for item in items]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise SuiteError(f"{where}: [[{kind}]] labels must be unique; repeated: {dupes}")

    exclude_raw = raw.get("exclude", []) or []
    if full and "exclude" in full_raw:
        exclude_raw = full_raw["exclude"] or []
    if not isinstance(exclude_raw, list):
        raise SuiteError(f"{where}: exclude must be a list of tables, got {exclude_raw!r}")
    exclude = []
    for i, rule in enumerate(exclude_raw):
        at = f"{where} [[exclude]] #{i + 1}"
        rule = _table(rule, at)
        _check_keys(rule, _EXCLUDE_KEYS, at)
        if not rule:
            raise SuiteError(f"{at} is empty: name a dataset, condition and/or strategy glob")
        for key, pattern in rule.items():
            if not isinstance(pattern, str):
                raise SuiteError(f"{at}: {key} must be a glob string, got {pattern!r}")
        exclude.append({k: str(v) for k, v in rule.items()})

    suite = Suite(
        name=name.strip(),
        path=p,
        base=base,
        datasets=datasets,
        strategies=strategies,
        conditions=conditions,
        seeds=suite_seeds,
        metric=_metric(head.get("metric"), f"{where} [suite]"),
        target=_target(head.get("target"), f"{where} [suite]"),
        description=str(head.get("description", "")),
        reference=str(head.get("reference", "")),
        notes=str(head.get("notes", "")),
        exclude=tuple(exclude),
        full=full,
    )
    _check_condition_params(suite, where)
    if not suite.cells():
        raise SuiteError(f"{where}: [[exclude]] removes every cell of the grid")
    return suite


def _list(raw: Mapping[str, Any], key: str, where: str) -> list[Any]:
    items = raw.get(key)
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{where}: needs at least one [[{key}]] entry")
    return items


def _dataset(raw: Any, i: int, where: str, full: bool) -> Dataset:
    at = f"{where} [[datasets]] #{i + 1}"
    raw = _table(raw, at)
    _check_keys(raw, _DATASET_KEYS, at)
    label = _label(raw, at)
    at = f"{where} dataset {label!r}"
    overrides = _sections(raw, at)
    full_overrides = _sections(_table(raw.get("full", {}), f"{at}.full"), f"{at}.full")
    _check_keys(_table(raw.get("full", {}), f"{at}.full"), SECTIONS, f"{at}.full")
    if full:
        overrides = merge(overrides, full_overrides)
    return Dataset(
        label=label,
        overrides=overrides,
        metric=_metric(raw.get("metric"), at),
        target=_target(raw.get("target"), at),
        full=full_overrides,
    )


def _strategy(raw: Any, i: int, where: str) -> StrategySpec:
    at = f"{where} [[strategies]] #{i + 1}"
    raw = _table(raw, at)
    label = _label(raw, at)
    at = f"{where} strategy {label!r}"
    params = {k: v for k, v in raw.items() if k not in ("label", "name", "baseline")}
    baseline = raw.get("baseline")
    if baseline is not None:
        if baseline not in _BASELINE_ALIASES:
            raise SuiteError(
                f"{at}: baseline {baseline!r} is not one of 'local', 'centralised'"
                f"{_suggest(str(baseline), list(_BASELINE_ALIASES))}"
            )
        if "name" in raw or params:
            extra = sorted({"name", *params} & set(raw))
            raise SuiteError(
                f"{at}: a baseline takes no strategy name or parameters (got {', '.join(extra)})"
            )
        return StrategySpec(label=label, baseline=_BASELINE_ALIASES[baseline])
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SuiteError(
            f"{at}: needs 'name' (a registered strategy, e.g. 'fedavg') or "
            "baseline = 'local' | 'centralised'"
        )
    return StrategySpec(label=label, name=name.strip().lower(), params=params)


def _condition(raw: Any, i: int, where: str, full: bool) -> Condition:
    at = f"{where} [[conditions]] #{i + 1}"
    raw = _table(raw, at)
    _check_keys(raw, _CONDITION_KEYS, at)
    label = _label(raw, at)
    at = f"{where} condition {label!r}"
    overrides = _sections(raw, at, skip=("strategy",))
    params = _table(raw.get("strategy", {}), f"{at}.strategy")
    if "name" in params:
        raise SuiteError(f"{at}.strategy: a condition cannot change the strategy's name")
    full_raw = _table(raw.get("full", {}), f"{at}.full")
    _check_keys(full_raw, SECTIONS, f"{at}.full")
    full_overrides = _sections(full_raw, f"{at}.full", skip=("strategy",))
    if full:
        overrides = merge(overrides, full_overrides)
        params = {**params, **_table(full_raw.get("strategy", {}), f"{at}.full.strategy")}
    attack = None
    if "attack" in raw:
        attack = _table(raw["attack"], f"{at}.attack")
        _check_keys(attack, _ATTACK_KEYS, f"{at}.attack")
        kind = attack.get("kind")
        if kind not in ATTACK_KINDS:
            raise SuiteError(
                f"{at}.attack: kind {kind!r} is not one of {', '.join(ATTACK_KINDS)}"
                f"{_suggest(str(kind), ATTACK_KINDS)}"
            )
        fraction = attack.get("fraction")
        if isinstance(fraction, bool) or not isinstance(fraction, int | float):
            raise SuiteError(f"{at}.attack: fraction must be a number in (0, 1), got {fraction!r}")
        if not 0.0 < float(fraction) < 1.0:
            raise SuiteError(f"{at}.attack: fraction must be in (0, 1), got {fraction!r}")
        scale = attack.get("scale")
        if scale is not None and (
            isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0
        ):
            raise SuiteError(f"{at}.attack: scale must be a number > 0, got {scale!r}")
    return Condition(
        label=label, overrides=overrides, strategy_params=params, attack=attack, full=full_overrides
    )


def _check_condition_params(suite: Suite, where: str) -> None:
    """A condition's strategy parameter must be accepted by some registered strategy."""
    for condition in suite.conditions:
        if not condition.strategy_params:
            continue
        accepted: set[str] = set()
        known = False
        for spec in suite.strategies:
            if spec.baseline is None:
                params = _accepted_params(str(spec.name))
                if params is not None:
                    known = True
                    accepted.update(params)
        if not known:
            continue  # no strategy registered yet: the cells will fail and say why
        for key in condition.strategy_params:
            if key not in accepted:
                raise SuiteError(
                    f"{where} condition {condition.label!r}: strategy parameter {key!r} is "
                    f"accepted by none of the suite's strategies{_suggest(key, sorted(accepted))}"
                )
