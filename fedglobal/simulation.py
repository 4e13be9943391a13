"""``fedglobal.simulate``: run one experiment and return its Result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedglobal import checkpoint, data
from fedglobal.config import ExperimentConfig, load_config
from fedglobal.errors import ConfigError, EngineError
from fedglobal.hooks import active as active_hooks
from fedglobal.hooks import as_hooks
from fedglobal.results import Result, load_run
from fedglobal.run_folder import new_run_dir


def simulate(
    config: str | Path | Mapping[str, Any] | ExperimentConfig,
    *,
    overrides: Sequence[str] | Mapping[str, Any] = (),
    engine: str | None = None,
    output_dir: str | Path | None = None,
    quiet: bool = False,
    hooks: Any = None,
    resume: str | Path | None = None,
) -> Result:
    """Run a simulated federation and return its :class:`Result`.

    Args:
        config: an experiment TOML path, a mapping of sections, or an ExperimentConfig.
        overrides: ``"section.key=value"`` strings (as ``--set`` on the command line).
        engine: overrides ``experiment.engine``.
        output_dir: where the run folder goes (default ``experiment.output_dir``).
        quiet: no per-round progress lines and no Flower INFO logs.
        hooks: server-side hooks (:mod:`fedglobal.hooks`): ServerHook objects or
            functions ``fn(round, metrics)``. Python objects, so ``inprocess`` only.
        resume: a run folder (or its ``resume.npz``) to continue: the rounds after
            its checkpoint run in that folder, and the result equals that of an
            uninterrupted run (``inprocess`` engine). The experiment must be the
            checkpointed one (``experiment.rounds`` may grow).

    Raises:
        CheckpointError: ``resume`` has no intact checkpoint (names the file and why).
    """
    cfg = load_config(config, overrides)
    if engine is not None:
        cfg = cfg.replace({"experiment.engine": engine})
    regions = data.list_regions(cfg)
    _check_enough_regions(cfg, regions)
    name = cfg.experiment.engine
    server_hooks = as_hooks(hooks)
    if server_hooks and name != "inprocess":
        raise ConfigError(
            f"server hooks are Python objects and run only with engine 'inprocess', not {name!r} "
            "(there the ServerApp is another process); use the [server] section's "
            "eval_source and early_stopping_* keys, which work on every engine"
        )
    ckpt_file = None
    if resume is not None:
        if name != "inprocess":
            raise ConfigError(
                f"resume works with engine 'inprocess' only, not {name!r} "
                '(--engine inprocess or experiment.engine = "inprocess")'
            )
        ckpt = checkpoint.load(resume)
        checkpoint.check_compatible(ckpt, cfg.to_toml())
        ckpt_file = ckpt.path
        assert ckpt_file is not None
        run_dir = ckpt_file.parent
    else:
        run_dir = new_run_dir(cfg, output_dir)
    if name == "inprocess":
        from fedglobal.engines.inprocess import run_inprocess

        with active_hooks(server_hooks), checkpoint.resuming(ckpt_file):
            run_inprocess(cfg, regions, run_dir, quiet=quiet)
    elif name == "cluster":
        from fedglobal.engines.cluster import run_cluster

        run_cluster(cfg, regions, run_dir, quiet=quiet)
    elif name == "ray":
        from fedglobal.engines.ray import run_ray

        run_ray(cfg, regions, run_dir, quiet=quiet)
    elif name == "deployment":
        from fedglobal.engines.deployment import run_deployment

        run_deployment(cfg, regions, run_dir, quiet=quiet)
    else:
        raise EngineError(f"experiment.engine = {name!r} is unknown")
    return load_run(run_dir)


def _check_enough_regions(cfg: ExperimentConfig, regions: Sequence[str]) -> None:
    """Fail fast when the strategy needs more clients than the data has regions.

    The minimums are read from the built strategy, so rule-specific defaults
    (e.g. Krum's 2f+3) count too, not only keys set in the experiment file.
    """
    import strategies

    strategy = strategies.get(cfg.strategy.name, **cfg.strategy.params)
    for key, attribute in (
        ("min_available_clients", "min_available_nodes"),
        ("min_train_clients", "min_train_nodes"),
        ("min_evaluate_clients", "min_evaluate_nodes"),
    ):
        needed = int(getattr(strategy, attribute, 0))
        if needed > len(regions):
            raise ConfigError(
                f"strategy {cfg.strategy.name!r} needs {key} = {needed} but the data has only "
                f"{len(regions)} region(s): {', '.join(regions[:10])}; lower strategy.{key} "
                "or use more regions"
            )
