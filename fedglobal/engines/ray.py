"""The ``ray`` engine: Flower's Simulation Engine, started and stopped by fedglobal.

One run:

1. a private ``FLWR_HOME`` (a temporary folder: the user's ``~/.flwr`` and
   ``pyproject.toml`` are never read or written);
2. ``flower-superlink --simulation --insecure --host 127.0.0.1 --port <free>
   --disable-runtime-dependency-installation``, waited for on ``/health``;
3. ``flwr run`` of fedglobal's app with ``num-supernodes`` = the number of
   regions and the client resources of ``[engine]`` (``client_cpus``,
   ``client_gpus``); Flower starts ``flwr-simulation``, which starts Ray, one
   actor pool, and the ServerApp. Simulated node ``partition-id = i`` is the
   experiment's i-th region (sorted), as on the in-process engine;
4. the run's log is streamed; the ServerApp writes the run folder;
5. every process (SuperLink, SuperExec, ``flwr-simulation``, Ray) is stopped
   by pid, also on error and on Ctrl-C, and the temporary folder (with Ray's
   session folders, ``RAY_TMPDIR``) is removed.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from fedglobal.config import ExperimentConfig
from fedglobal.engines.flower import FlowerHome, run_config_for, start_superlink, submit_run
from fedglobal.engines.processes import Supervisor
from fedglobal.errors import EngineError


def run_timeout(cfg: ExperimentConfig) -> float:
    """The longest a whole run may take: start-up plus every exchange's own timeout."""
    exchanges = 2 + 2 * cfg.experiment.rounds  # statistics, round 0, (train + evaluate) per round
    return cfg.engine.connect_timeout * 2 + exchanges * cfg.experiment.round_timeout


def run_ray(
    cfg: ExperimentConfig,
    regions: Sequence[str],
    run_dir: Path,
    *,
    quiet: bool = False,
    out: TextIO | None = None,
) -> None:
    """Run ``cfg`` on Flower's Simulation Engine (Ray); the ServerApp writes ``run_dir``."""
    with tempfile.TemporaryDirectory(prefix="fedglobal-ray-") as tmp:
        home = FlowerHome(Path(tmp) / "flwr-home")
        with Supervisor(log_dir=Path(tmp) / "logs") as sup:
            link = start_superlink(
                sup,
                home,
                simulation=True,
                timeout=cfg.engine.connect_timeout,
                env={"RAY_TMPDIR": tmp},  # Ray's session folders go with the rest
            )
            run_config = run_config_for(
                cfg.to_toml(),
                base_dir=cfg.base_dir,
                run_dir=run_dir,
                engine="ray",
                expected_nodes=len(regions),
                quiet=quiet,
            )
            federation = {
                "num-supernodes": len(regions),
                "client-resources-num-cpus": int(cfg.engine.client_cpus),
                "client-resources-num-gpus": float(cfg.engine.client_gpus),
            }
            outcome = submit_run(
                sup,
                home,
                run_config,
                timeout=run_timeout(cfg),
                federation_config=federation,
                quiet=quiet,
                out=out or sys.stderr,
            )
            if not outcome.ok:
                log = "" if outcome.run_id else f"\nSuperLink log:\n{link.process.log_tail()}"
                raise EngineError(f"the ray engine failed: {outcome.describe()}{log}")
