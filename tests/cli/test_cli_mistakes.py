"""Wrong paths and wrong arguments to every command end in one clear line, never a traceback.

The CLI's ``main`` runs in this process (as the console script does, without
its quick exit); one subprocess checks the console script itself.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fedglobal.cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "experiments" / "quickstart.toml")


@pytest.fixture(autouse=True)
def _keep_sigterm():
    """The engine commands make SIGTERM unwind like Ctrl-C; give pytest its handler back."""
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)


def one_error_line(capsys, argv: list[str]) -> str:
    """Run ``fedglobal ARGV``; assert exit 2 and one ``fedglobal: error:`` line; return it."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("fedglobal: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def usage_error(capsys, argv: list[str]) -> str:
    """Run ``fedglobal ARGV``; assert argparse's usage error (exit 2); return its last line."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a run, not TOML = = =\n")
    return path


# -- export, report, tensorboard ------------------------------------------------------


def test_export_of_a_missing_folder_or_a_file(capsys, tmp_path, a_file):
    line = one_error_line(capsys, ["export", str(tmp_path / "nope")])
    assert "nope" in line and "not a complete run folder" in line
    line = one_error_line(capsys, ["export", str(a_file)])
    assert "notes.txt" in line
    assert "invalid choice: 'onnx'" in usage_error(
        capsys, ["export", str(tmp_path), "--format", "onnx"]
    )


def test_report_of_missing_or_empty_folders(capsys, tmp_path, a_file):
    assert "no such run folder" in one_error_line(capsys, ["report", str(tmp_path / "nope")])
    assert "holds no run folders" in one_error_line(capsys, ["report", str(tmp_path)])
    assert "is a file, not a run folder" in one_error_line(capsys, ["report", str(a_file)])


def test_tensorboard_of_a_missing_folder_and_a_bad_port(capsys, tmp_path):
    assert "no such folder" in one_error_line(capsys, ["tensorboard", str(tmp_path / "nope")])
    assert "port 70000 is out of range" in usage_error(
        capsys, ["tensorboard", str(tmp_path), "--port", "70000"]
    )


# -- benchmark -------------------------------------------------------------------------


def test_benchmark_of_a_missing_file_a_non_toml_file_and_an_experiment(capsys, tmp_path, a_file):
    assert "not found" in one_error_line(capsys, ["benchmark", str(tmp_path / "suite.toml")])
    assert "not valid TOML" in one_error_line(capsys, ["benchmark", str(a_file)])
    line = one_error_line(capsys, ["benchmark", QUICKSTART])
    assert "unknown key 'experiment'" in line


# -- client, superlink, run, deploy ----------------------------------------------------


def test_client_with_missing_data_bad_address_or_no_certificate(capsys, tmp_path):
    line = one_error_line(
        capsys,
        ["client", "--region", "x", "--data", str(tmp_path / "x.csv"),
         "--superlink", "127.0.0.1:9092", "--insecure"],
    )  # fmt: skip
    assert "x.csv: no such file" in line
    assert "port 'notaport' is not a number" in usage_error(
        capsys, ["client", "--region", "x", "--superlink", "127.0.0.1:notaport", "--insecure"]
    )
    line = one_error_line(capsys, ["client", "--region", "x", "--superlink", "127.0.0.1:9092"])
    assert "--tls-ca" in line


def test_superlink_with_missing_certificates_or_a_bad_port(capsys, tmp_path):
    line = one_error_line(capsys, ["superlink", "--tls-dir", str(tmp_path / "certs")])
    assert "lacks ca.crt" in line
    assert "port -5 is out of range" in usage_error(capsys, ["superlink", "--port", "-5"])


def test_run_with_a_missing_experiment_or_a_url_as_address(capsys, tmp_path):
    line = one_error_line(
        capsys,
        ["run", str(tmp_path / "x.toml"), "--superlink", "127.0.0.1:9092", "--insecure"],
    )
    assert "experiment file not found" in line
    assert "is not HOST:PORT" in usage_error(
        capsys, ["run", QUICKSTART, "--superlink", "https://server:9092"]
    )


def test_deploy_with_a_missing_experiment_or_a_strategy_that_does_not_fit(capsys, tmp_path):
    assert "experiment file not found" in one_error_line(
        capsys, ["deploy", str(tmp_path / "x.toml")]
    )
    line = one_error_line(
        capsys, ["deploy", QUICKSTART, "--set", "strategy.name=fedbn", "--output-dir", "/x"]
    )
    assert "matches no model variable" in line and "model.batch_norm = true" in line


# -- simulate --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["strategy.name=fedbn"], "set model.batch_norm = true"),
        (
            ["strategy.name=layerwise", 'strategy.layers=[{match = "dense*", rule = "local"}]'],
            "pattern 'dense*' matches no model variable",
        ),
        (["model.name=resnet"], "'resnet' is not a known model"),
    ],
)
def test_simulate_refuses_a_strategy_that_does_not_fit_before_any_run_folder(
    capsys, tmp_path, overrides, expected
):
    sets = [arg for o in overrides for arg in ("--set", o)]
    line = one_error_line(
        capsys, ["simulate", QUICKSTART, *sets, "--output-dir", str(tmp_path / "runs")]
    )
    assert expected in line
    assert not (tmp_path / "runs").exists()


def test_simulate_into_a_folder_that_cannot_be_made(capsys, a_file):
    line = one_error_line(capsys, ["simulate", QUICKSTART, "--output-dir", str(a_file / "runs")])
    assert str(a_file) in line


def test_resume_from_a_missing_folder(capsys, tmp_path):
    line = one_error_line(capsys, ["simulate", QUICKSTART, "--resume", str(tmp_path / "run")])
    assert "cannot resume" in line


def test_the_console_script_prints_the_strategy_error_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fedglobal.cli", "simulate", QUICKSTART,
         "--set", "strategy.name=fedbn", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("fedglobal: error: strategy 'fedbn'")
