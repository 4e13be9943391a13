"""history.csv and summary.json: docs/results.md, the code's schema and real runs agree."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

import fedglobal
from fedglobal.run.results import HISTORY_COLUMNS, METRICS, SPLITS, SUMMARY_FIELDS, check_run

DOC = Path(__file__).resolve().parents[2] / "docs" / "results.md"


def _table_keys(heading: str) -> list[str]:
    """The first-column keys of the table under ``### heading`` in docs/results.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)


def test_docs_document_every_summary_key_and_history_column():
    assert _table_keys("summary.json") == list(SUMMARY_FIELDS)
    assert _table_keys("history.csv") == list(HISTORY_COLUMNS)
    text = DOC.read_text(encoding="utf-8")
    for value in (*SPLITS, *METRICS):
        assert f"`{value}`" in text


@pytest.mark.slow
def test_real_runs_conform(tiny_runs):
    for result in (tiny_runs.fedavg, tiny_runs.fedper):
        assert check_run(result.run_dir) == []
        loaded = fedglobal.load_run(result.run_dir)
        assert loaded.config == result.config
        pd.testing.assert_frame_equal(loaded.history, result.history)
        assert loaded.history.dtypes["round"].kind == "i"
        assert loaded.history.dtypes["value"].kind == "f"
        assert loaded.model.count_params() > 0


@pytest.mark.slow
def test_check_run_names_what_is_wrong(run_copy):
    run_dir = run_copy("fedavg")
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["surprise"] = 1
    summary["rounds"] = "two"
    del summary["comm"]
    (run_dir / "summary.json").write_text(json.dumps(summary))
    history = pd.read_csv(run_dir / "history.csv")
    history.loc[0, "split"] = "validation"
    history.to_csv(run_dir / "history.csv", index=False)
    problems = check_run(run_dir)
    assert "summary.json: undocumented key 'surprise'" in problems
    assert "summary.json: rounds has type str" in problems
    assert "summary.json: missing key 'comm'" in problems
    assert "history.csv: unknown split values ['validation']" in problems
    (run_dir / "model.keras").unlink()
    assert check_run(run_dir) == ["missing model.keras"]
