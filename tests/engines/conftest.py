"""Fixtures of the engine tests (helpers in engine_helpers.py).

After each test no live process may carry this session's environment marker
and the test process may have no live descendant: everything started was stopped.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fedglobal.engines.processes import descendants
from tests.engines.engine_helpers import (
    FleetRecorder,
    describe_pids,
    experiment,
    load_toml,
    run_cli,
    session_processes,
    write_experiment,
    write_rows,
)


@pytest.fixture(autouse=True)
def no_process_left_behind():
    """Every test leaves no process behind (checked by environment marker and by parentage)."""
    # Processes alive before the test are not its own: worker pools of other
    # tests' engines, multiprocessing's resource tracker (started by the first
    # spawn-context pool of the session and alive until pytest exits)...
    before = set(descendants(os.getpid())) | set(session_processes())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        left = sorted((set(session_processes()) | set(descendants(os.getpid()))) - before)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"processes left behind:\n{describe_pids(left)}"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict:
    """Paths of the tiny experiment: csv, an output folder, the TOML file."""
    root = tmp_path_factory.mktemp("tiny")
    csv = root / "rows.csv"
    rows = write_rows(csv)
    raw = experiment(csv, root / "runs")
    toml = write_experiment(root / "tiny.toml", raw)
    return {"root": root, "csv": csv, "rows": rows, "raw": raw, "toml": toml}


# -- the same 2-round experiment on the three engines (shared by several test files) ---------


@pytest.fixture(scope="session")
def inprocess_run(tiny):
    import copy

    import fedglobal

    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"]["output_dir"] = str(tiny["root"] / "inprocess")
    return fedglobal.simulate(raw, quiet=True)


@pytest.fixture(scope="session")
def ray_run(tiny):
    """``fedglobal simulate tiny.toml --engine ray`` (the documented command), 2 rounds."""
    from fedglobal.run.results import load_run

    out = tiny["root"] / "ray"
    home = tiny["root"] / "home"  # a HOME of its own: the run must not create ~/.flwr
    home.mkdir()
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_bytes()
    started = time.perf_counter()
    proc = run_cli(
        "simulate",
        str(tiny["toml"]),
        "--engine",
        "ray",
        "--output-dir",
        str(out),
        env={"HOME": str(home)},
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    (run_dir,) = list(out.iterdir())
    return {
        "result": load_run(run_dir),
        "proc": proc,
        "seconds": time.perf_counter() - started,
        "home_after": sorted(p.name for p in home.iterdir()),
        "pyproject_unchanged": pyproject
        == (Path(__file__).resolve().parents[2] / "pyproject.toml").read_bytes(),
    }


@pytest.fixture(scope="session")
def deployment_run(tiny, tmp_path_factory):
    """A plain loopback deployment, every Fleet exchange recorded by a proxy.

    Each region's rows go to its own file (the SuperNode's ``data-path``); the
    source table is then deleted, so a client can read nothing but its own file.
    """
    import shutil

    from fedglobal import data
    from fedglobal.config import load_config
    from fedglobal.engines.deployment import LoopbackDeployment
    from fedglobal.run.folder import new_run_dir
    from fedglobal.run.results import load_run

    root = tmp_path_factory.mktemp("deployment")
    source = root / "source.csv"
    shutil.copy(tiny["csv"], source)
    cfg = load_config(experiment(source, root / "runs"))
    regions = data.list_regions(cfg)
    deployment = LoopbackDeployment(cfg, regions, workdir=root / "work")
    deployment.start(supernodes=False)
    try:
        source.unlink()
        with FleetRecorder(deployment.superlink.address) as recorder:
            for region in regions:
                deployment.add_supernode(region, superlink_address=recorder.address)
            run_dir = new_run_dir(cfg)
            outcome = deployment.run(run_dir, quiet=True)
        node_configs = {
            region: load_toml(
                Path(node.supernode.argv[node.supernode.argv.index("--node-config") + 1])
            )
            for region, node in deployment.supernodes.items()
        }
    finally:
        deployment.stop()
    assert outcome.ok, outcome.describe() + "".join(outcome.output[-40:])
    return {
        "result": load_run(run_dir),
        "messages": recorder.messages(),
        "exchanges": recorder.exchanges,
        "node_configs": node_configs,
        "files": deployment.data_files,
        "rows": tiny["rows"],
    }
