"""``fedglobal.simulate``: run one experiment and return its Result."""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fedglobal import data
from fedglobal.config import ExperimentConfig, load_config
from fedglobal.errors import ConfigError, EngineError
from fedglobal.run import checkpoint
from fedglobal.run.folder import new_run_dir
from fedglobal.run.results import Result, load_run
from fedglobal.runtime.preflight import check_enough_regions, check_strategy_fits_model
from fedglobal.server.callbacks.hooks import active as active_hooks
from fedglobal.server.callbacks.hooks import as_hooks

log = logging.getLogger(__name__)


def simulate(
    config: str | Path | Mapping[str, Any] | ExperimentConfig | None = None,
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
        config: an experiment TOML path, a mapping of sections, or an ExperimentConfig;
            may be None with ``resume`` (the run folder holds its resolved experiment).
        overrides: ``"section.key=value"`` strings (as ``--set`` on the command line).
        engine: overrides ``experiment.engine``.
        output_dir: where the run folder goes (default ``experiment.output_dir``).
        quiet: no per-round progress lines and no Flower INFO logs.
        hooks: server-side hooks (:mod:`fedglobal.server.callbacks.hooks`): ServerHook objects or
            functions ``fn(round, metrics)``. Python objects, so ``inprocess`` only.
        resume: a run folder (or its ``resume.npz``) to continue: the rounds after
            its checkpoint run in that folder, and the result equals that of an
            uninterrupted run (``inprocess`` engine). The experiment is the
            checkpointed one, read from the checkpoint; ``overrides`` may raise
            ``experiment.rounds``. A ``config`` given too is used when it equals the
            checkpointed experiment (up to the resumable keys), else the checkpoint's.

    Raises:
        CheckpointError: ``resume`` has no intact checkpoint (names the file and why).
    """
    ckpt = checkpoint.load(resume) if resume is not None else None
    if ckpt is not None:
        cfg = resumed_config(ckpt, config, overrides)
    elif config is None:
        raise ConfigError("simulate needs an experiment (a TOML file, a mapping or a config)")
    else:
        cfg = load_config(config, overrides)
    if engine is not None:
        cfg = cfg.replace({"experiment.engine": engine})
    check_strategy_fits_model(cfg)  # before any data is loaded
    regions = data.list_regions(cfg)
    check_enough_regions(cfg, regions)
    name = cfg.experiment.engine
    server_hooks = as_hooks(hooks)
    if server_hooks and name != "inprocess":
        raise ConfigError(
            f"server hooks are Python objects and run only with engine 'inprocess', not {name!r} "
            "(there the ServerApp is another process); use the [server] section's "
            "eval_source and early_stopping_* keys, which work on every engine"
        )
    ckpt_file = None
    if ckpt is not None:
        if name != "inprocess":
            raise ConfigError(
                f"resume works with engine 'inprocess' only, not {name!r} "
                '(--engine inprocess or experiment.engine = "inprocess")'
            )
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


def resumed_config(
    ckpt: checkpoint.Checkpoint,
    config: str | Path | Mapping[str, Any] | ExperimentConfig | None,
    overrides: Sequence[str] | Mapping[str, Any],
) -> ExperimentConfig:
    """The experiment a resumed run continues: the checkpoint's resolved one.

    ``overrides`` apply on top (``experiment.rounds`` extends the run; other keys
    are refused by :func:`checkpoint.check_compatible`). A ``config`` that fits
    the checkpoint is used as given (its ``experiment.rounds`` may extend the
    run); one that does not (e.g. the first run's ``--set`` overrides not
    repeated) gives way to the checkpoint's, with a note naming the keys.
    """
    saved = ExperimentConfig.from_dict(
        tomllib.loads(ckpt.config_toml), base_dir=Path(ckpt.path or ".").parent
    )
    if config is not None:
        given = load_config(config, overrides)
        differs = checkpoint.changed_keys(ckpt, given.to_toml())
        if not differs:
            return given
        log.warning(
            "resuming the run's own experiment (its checkpoint); the experiment given "
            "differs in %s",
            ", ".join(differs[:8]),
        )
    return saved.replace(overrides)
