"""Secure by default: `fedglobal superlink`, `client` and `run` need certificates or --insecure.

The refusals and warnings are checked in this process (``fedglobal.cli.main.main``,
nothing is started); the accepted insecure path runs the real commands, each
its own process: ``superlink --insecure``, ``client --insecure``, ``run --insecure``.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess

import pytest

from fedglobal.cli import main as cli
from fedglobal.config import load_config
from fedglobal.engines import deployment
from fedglobal.engines.deployment import export_region_files
from fedglobal.engines.processes import DIE_WITH_PARENT, free_port, wait_until
from fedglobal.engines.tls import make_certificates
from fedglobal.errors import EngineError
from tests.engines.engine_helpers import FEDGLOBAL, start_fedglobal, write_experiment


@pytest.fixture(autouse=True)
def keep_sigterm_handler():
    """``run_command`` lets SIGTERM unwind like Ctrl-C; give pytest its handler back."""
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)


def _main(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- refusals: nothing starts ----------------------------------------------------------------


def test_superlink_without_certificates_says_how_to_make_them_or_pass_insecure(capsys):
    code, _, err = _main(capsys, "superlink", "--port", "1")
    assert code == 2
    assert "fedglobal: error: superlink: no certificates given (--tls-dir)" in err
    assert "`fedglobal certs certs/ --host" in err and "--tls-dir certs/" in err
    assert "`fedglobal keys keys/" in err and "--insecure" in err


def test_client_without_ca_says_how_to_get_it_or_pass_insecure(capsys):
    code, _, err = _main(capsys, "client", "--region", "europe", "--superlink", "127.0.0.1:1")
    assert code == 2
    assert "fedglobal: error: client: no CA certificate given (--tls-ca)" in err
    assert "`fedglobal certs" in err and "--auth-key" in err and "--insecure" in err


def test_run_without_ca_refuses_before_writing_a_run_folder(capsys, tiny, tmp_path):
    out = tmp_path / "runs"
    code, _, err = _main(
        capsys, "run", str(tiny["toml"]), "--superlink", "127.0.0.1:1", "--output-dir", str(out)
    )
    assert code == 2
    assert "fedglobal: error: run: no CA certificate given (--tls-ca)" in err
    assert "`fedglobal certs" in err and "--insecure" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["superlink", "--insecure", "--tls-dir", "certs"],
            "superlink: --insecure and --tls-dir certs contradict each other",
        ),
        (
            ["superlink", "--insecure", "--auth-keys", "keys"],
            "superlink: --auth-keys keys needs --tls-dir",
        ),
        (
            ["client", "--region", "e", "--superlink", "h:1", "--insecure", "--tls-ca", "ca.crt"],
            "client: --insecure and --tls-ca ca.crt contradict each other",
        ),
        (
            ["client", "--region", "e", "--superlink", "h:1", "--auth-key", "keys/e"],
            "client: --auth-key keys/e needs --tls-ca",
        ),
        (
            ["client", "--region", "e", "--superlink", "h:1", "--tls-ca", "nowhere/ca.crt"],
            "client: --tls-ca nowhere/ca.crt: no such file",
        ),
        (
            ["run", "x.toml", "--superlink", "h:1", "--insecure", "--tls-ca", "ca.crt"],
            "run: --insecure and --tls-ca ca.crt contradict each other",
        ),
    ],
)
def test_contradictory_security_options_are_refused(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)  # relative names resolve to nothing here
    code, _, err = _main(capsys, *argv)
    assert code == 2
    assert f"fedglobal: error: {expected}" in err


# -- warnings ---------------------------------------------------------------------------------


def _no_start(*args, **kwargs):
    raise EngineError("stopped before starting anything (test)")


def test_superlink_with_tls_but_no_keys_warns_that_authentication_is_off(
    capsys, tmp_path, monkeypatch
):
    make_certificates(tmp_path / "certs")
    monkeypatch.setattr(deployment, "start_superlink", _no_start)
    code, _, err = _main(capsys, "superlink", "--tls-dir", str(tmp_path / "certs"))
    assert code == 2 and "stopped before starting anything" in err
    assert "fedglobal: warning: SuperNode authentication is off" in err
    assert "--auth-keys DIR" in err


def test_deploy_warns_when_plain_http_on_loopback_and_not_with_tls(
    capsys, tiny, tmp_path, monkeypatch
):
    monkeypatch.setattr(deployment, "run_deployment", _no_start)
    out = str(tmp_path / "runs")
    code, _, err = _main(capsys, "deploy", str(tiny["toml"]), "--output-dir", out)
    assert code == 2 and "stopped before starting anything" in err
    assert "fedglobal deploy: warning: plain HTTP on 127.0.0.1" in err
    assert "--tls" in err and "--auth" in err
    for flag in ("--tls", "--auth"):
        code, _, err = _main(capsys, "deploy", str(tiny["toml"]), flag, "--output-dir", out)
        assert code == 2 and "stopped before starting anything" in err
        assert "warning" not in err


# -- the accepted insecure path, end to end ----------------------------------------------------


def _interrupt(proc: subprocess.Popen, timeout: float = 60) -> int:
    """Stop a ``fedglobal`` command by pid as Ctrl-C/SIGTERM would."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    return proc.wait(timeout=timeout)


@pytest.mark.slow
def test_insecure_superlink_client_and_run_work_and_warn(tiny, tmp_path):
    raw = copy.deepcopy(tiny["raw"])
    raw["experiment"]["rounds"] = 1
    toml = write_experiment(tmp_path / "exp.toml", raw)
    regions = ["asia", "europe"]  # two clients: the strategy's minimum
    files = export_region_files(load_config(raw), regions, tmp_path / "data")
    port = free_port()
    link_log = tmp_path / "superlink.log"
    client_logs = {r: tmp_path / f"client-{r}.log" for r in regions}
    link = start_fedglobal(
        "superlink", "--insecure", "--host", "127.0.0.1", "--port", str(port), log=link_log
    )
    clients: dict[str, subprocess.Popen] = {}
    try:
        wait_until(
            lambda: "SuperLink serving on" in link_log.read_text() or link.poll() is not None,
            timeout=120,
            what="the insecure SuperLink to start",
        )
        assert link.poll() is None, link_log.read_text()
        for region in regions:
            clients[region] = start_fedglobal(
                *("client", "--insecure", "--region", region, "--data", str(files[region])),
                *("--superlink", f"127.0.0.1:{port}"),
                log=client_logs[region],
            )
        wait_until(
            lambda: all(
                "ready: region" in client_logs[r].read_text() or clients[r].poll() is not None
                for r in regions
            ),
            timeout=300,
            what="the insecure clients to be ready",
        )
        for region in regions:
            assert clients[region].poll() is None, client_logs[region].read_text()
        run = subprocess.run(
            [
                *(FEDGLOBAL, "run", str(toml), "--insecure", "--superlink", f"127.0.0.1:{port}"),
                *("--regions", "2", "--output-dir", str(tmp_path / "runs"), "--quiet"),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            preexec_fn=DIE_WITH_PARENT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        assert "fedglobal: warning: --insecure: plain HTTP to the SuperLink at 127.0.0.1:" in (
            run.stderr
        )
        assert "final test metrics" in run.stdout
    finally:
        codes = [_interrupt(p) for p in [*clients.values(), link]]
    assert codes == [0, 0, 0]  # Ctrl-C/SIGTERM: a clean exit
    link_text = link_log.read_text()
    assert "fedglobal: warning: --insecure: the SuperLink serves plain HTTP on 127.0.0.1:" in (
        link_text
    )
    assert "plain HTTP (no TLS)" in link_text
    for log in client_logs.values():
        assert "fedglobal: warning: --insecure: plain HTTP to the SuperLink" in log.read_text()
