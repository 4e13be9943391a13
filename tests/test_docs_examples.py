"""Run the examples in README.md and docs/*.md that are marked to be run.

Convention: a fenced ``python`` or ``bash`` block whose previous non-empty line
is ``<!-- test -->`` is an example this test runs. A document's marked blocks
run in order, in one fresh folder (the repository's ``experiments/`` and the
virtualenv are linked in as ``experiments`` and ``.venv``, so the commands
read as in the docs). Python blocks share one namespace, as in a notebook;
bash blocks run with ``bash -euo pipefail``. Leave long-running commands
(servers, 20-round runs) unmarked.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- test -->"
FENCE = re.compile(r"^```(\w+)\s*$")
#: Documents in which every python example must be marked (run).
FULLY_TESTED = ("docs/data.md", "docs/results.md")


def examples(path: Path) -> list[tuple[int, str, str, bool]]:
    """``(line, language, code, marked)`` of each fenced block of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i, previous = [], 0, ""
    while i < len(lines):
        match = FENCE.match(lines[i].strip())
        if match:
            start, language, body = i + 1, match.group(1), []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            out.append((start, language, "\n".join(body) + "\n", previous == MARK))
            previous = ""
        elif lines[i].strip():
            previous = lines[i].strip()
        i += 1
    return out


def _marked(path: Path) -> list[tuple[int, str, str, bool]]:
    return [e for e in examples(path) if e[3]]


DOCS_WITH_EXAMPLES = [p for p in DOCS if p.is_file() and _marked(p)]


def test_markers_precede_runnable_blocks():
    for path in DOCS:
        if not path.is_file():
            continue
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        for n, line in enumerate(lines):
            if line == MARK:
                following = next((x for x in lines[n + 1 :] if x), "")
                assert following in ("```python", "```bash"), (
                    f"{path.name}:{n + 1}: {MARK} must be followed by a python or bash block"
                )


@pytest.mark.parametrize("name", FULLY_TESTED)
def test_every_python_example_of_these_docs_is_run(name: str):
    path = ROOT / name
    unmarked = [line for line, lang, _, marked in examples(path) if lang == "python" and not marked]
    assert not unmarked, f"{name}: python examples not marked {MARK} at lines {unmarked}"
    assert len(_marked(path)) >= 4


@pytest.mark.slow
@pytest.mark.parametrize("path", DOCS_WITH_EXAMPLES, ids=lambda p: p.name)
def test_doc_examples_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "experiments").symlink_to(ROOT / "experiments")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    namespace: dict = {"__name__": "__docs__"}
    for line, language, code, _ in _marked(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        if language == "python":
            exec(compile(code, where, "exec"), namespace)
        else:
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", code],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, f"{where} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
