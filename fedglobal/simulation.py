"""``fedglobal.simulate``: run one experiment and return its Result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedglobal import data
from fedglobal.config import ExperimentConfig, load_config
from fedglobal.errors import ConfigError, EngineError
from fedglobal.results import Result, load_run
from fedglobal.run_folder import new_run_dir


def simulate(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    engine: str | None = None,
    output_dir: str | Path | None = None,
    quiet: bool = False,
) -> Result:
    """Run a simulated federation and return its :class:`Result`.

    Args:
        config: an experiment TOML path, a mapping of sections, or an ExperimentConfig.
        overrides: ``"section.key=value"`` strings (as ``--set`` on the command line).
        engine: overrides ``experiment.engine``.
        output_dir: where the run folder goes (default ``experiment.output_dir``).
        quiet: no per-round progress lines and no Flower INFO logs.
    """
    cfg = load_config(config, overrides)
    if engine is not None:
        cfg = cfg.replace({"experiment.engine": engine})
    regions = data.list_regions(cfg)
    _check_enough_regions(cfg, regions)
    run_dir = new_run_dir(cfg, output_dir)
    name = cfg.experiment.engine
    if name == "inprocess":
        from fedglobal.engines.inprocess import run_inprocess

        run_inprocess(cfg, regions, run_dir, quiet=quiet)
    else:
        raise EngineError(
            f"experiment.engine = {name!r} is not available in this version; "
            "use 'inprocess' (the Ray and deployment engines are tracked separately)"
        )
    return load_run(run_dir)


def _check_enough_regions(cfg: ExperimentConfig, regions: Sequence[str]) -> None:
    params = cfg.strategy.params
    for key in ("min_available_clients", "min_train_clients", "min_evaluate_clients"):
        needed = int(params.get(key, 2))
        if needed > len(regions):
            raise ConfigError(
                f"strategy.{key} = {needed} but the data has only {len(regions)} "
                f"region(s): {', '.join(regions[:10])}; lower strategy.{key}"
            )
