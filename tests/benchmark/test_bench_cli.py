"""``fedglobal benchmark`` on the command line: listing cells and clear errors."""

from __future__ import annotations

from pathlib import Path

from fedglobal.cli.main import main

SUITE = (
    Path(__file__).resolve().parents[2] / "experiments" / "benchmarks" / "fedprox_synthetic.toml"
)


def test_list_cells(capsys):
    assert (
        main(["benchmark", str(SUITE), "--list", "--seeds", "7", "--only", "strategy=fedavg"]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines and all(line.endswith("| FedAvg | 7") for line in lines)
    assert "Synthetic(1,1) | 90% stragglers | FedAvg | 7" in lines


def test_full_scale_has_more_cells(capsys):
    main(["benchmark", str(SUITE), "--list"])
    small = len(capsys.readouterr().out.splitlines())
    main(["benchmark", str(SUITE), "--list", "--full"])
    assert len(capsys.readouterr().out.splitlines()) > small


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["benchmark", str(tmp_path / "nope.toml")]) == 2
    assert "fedglobal: error: benchmark suite file not found" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[suite]\nname = "x"\n[[datasets]]\nlabel = "d"\n')
    assert main(["benchmark", str(bad)]) == 2
    assert "needs at least one [[strategies]] entry" in capsys.readouterr().err
    assert main(["benchmark", str(SUITE), "--list", "--only", "strategy=nothing"]) == 2
    assert "matches no cell" in capsys.readouterr().err
