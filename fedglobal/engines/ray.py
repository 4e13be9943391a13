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

With ``[engine] ray_address`` (else ``$RAY_ADDRESS``), ``flwr-simulation``
attaches to that running Ray cluster instead of starting a private Ray: its
actors are placed on the cluster's nodes, and the cluster is left running (it
is not fedglobal's to stop). ``summary.json``'s ``placement`` names the Ray node
that trained each region.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from fedglobal.config import ExperimentConfig, ray_address_problem
from fedglobal.engines.flower import FlowerHome, run_config_for, start_superlink, submit_run
from fedglobal.engines.processes import Supervisor
from fedglobal.errors import EngineError

#: Ray's own variable naming the cluster a driver attaches to.
RAY_ADDRESS_ENV = "RAY_ADDRESS"
_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def driver_env(address: str) -> dict[str, str]:
    """Environment of a Ray driver attaching to the cluster at ``address``.

    A driver rewrites a loopback address into this machine's outward IP before
    connecting (``ray._private.services.resolve_ip_for_localhost``), so a cluster
    whose nodes listen on 127.0.0.1 only (one machine, tests) cannot be reached.
    For a loopback address, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` keeps Ray's
    node address the loopback one (Ray's switch for single-machine clusters)."""
    env = {RAY_ADDRESS_ENV: address}
    if address.rpartition(":")[0] in _LOOPBACK:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def ray_address(cfg: ExperimentConfig) -> str | None:
    """The Ray cluster to attach to: ``[engine] ray_address``, else ``$RAY_ADDRESS``,
    else None (a private local Ray). A malformed ``$RAY_ADDRESS`` is an EngineError."""
    if cfg.engine.ray_address:
        return cfg.engine.ray_address.strip()
    env = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    if not env:
        return None
    problem = ray_address_problem(env)
    if problem:
        raise EngineError(f"${RAY_ADDRESS_ENV} = {env!r}: {problem}")
    return env


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
    address = ray_address(cfg)
    with tempfile.TemporaryDirectory(prefix="fedglobal-ray-") as tmp:
        home = FlowerHome(Path(tmp) / "flwr-home")
        if address:  # flwr-simulation's ray.init() attaches to the cluster
            env = driver_env(address)
            if not quiet:
                print(
                    f"ray engine: attaching to the Ray cluster at {address}", file=out or sys.stderr
                )
        else:  # a private Ray: its session folders go with the rest
            env = {"RAY_TMPDIR": tmp}
        with Supervisor(log_dir=Path(tmp) / "logs") as sup:
            link = start_superlink(
                sup,
                home,
                simulation=True,
                timeout=cfg.engine.connect_timeout,
                env=env,
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
