"""Run the examples in README.md and docs/*.md that are marked to be run.

Convention: a fenced ``python`` or ``bash`` block whose previous non-empty line
is ``<!-- test -->`` is an example this test runs. A document's marked blocks
run in order, in one fresh folder (the repository's ``experiments/`` and the
virtualenv are linked in as ``experiments`` and ``.venv``, so the commands
read as in the docs). Python blocks share one namespace, as in a notebook;
bash blocks run with ``bash -euo pipefail``. Leave long-running commands
(servers, 20-round runs) unmarked.

A marked ``toml`` block is a fragment of an experiment file: its sections are
merged into a minimal experiment and validated by :func:`fedglobal.load_config`
(relative paths resolve against ``experiments/``), so every key and value it
shows is one the experiment file accepts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = "<!-- test -->"
FENCE = re.compile(r"^```(\w+)\s*$")
#: Documents in which every python example must be marked (run).
FULLY_TESTED = ("docs/data.md", "docs/results.md", "docs/strategies.md", "docs/training.md")
#: Documents in which every toml example must be marked (validated).
TOML_TESTED = ("docs/results.md", "docs/strategies.md", "docs/training.md")
#: What a toml fragment is merged into: a valid experiment without files.
BASE_EXPERIMENT = {"data": {"source": "synthetic:fedprox", "task": "classification"}}
RUNNABLE = ("python", "bash")


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


def _marked(path: Path, languages: tuple[str, ...] = RUNNABLE) -> list[tuple[int, str, str, bool]]:
    return [e for e in examples(path) if e[3] and e[1] in languages]


DOCS_WITH_EXAMPLES = [p for p in DOCS if p.is_file() and _marked(p)]


def test_markers_precede_runnable_blocks():
    for path in DOCS:
        if not path.is_file():
            continue
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        for n, line in enumerate(lines):
            if line == MARK:
                following = next((x for x in lines[n + 1 :] if x), "")
                assert following in ("```python", "```bash", "```toml"), (
                    f"{path.name}:{n + 1}: {MARK} must be followed by a python, bash or toml block"
                )


@pytest.mark.parametrize("name", FULLY_TESTED)
def test_every_python_example_of_these_docs_is_run(name: str):
    path = ROOT / name
    unmarked = [line for line, lang, _, marked in examples(path) if lang == "python" and not marked]
    assert not unmarked, f"{name}: python examples not marked {MARK} at lines {unmarked}"
    assert len(_marked(path, (*RUNNABLE, "toml"))) >= 4


@pytest.mark.parametrize("name", TOML_TESTED)
def test_every_toml_example_of_these_docs_is_validated(name: str):
    path = ROOT / name
    unmarked = [line for line, lang, _, marked in examples(path) if lang == "toml" and not marked]
    assert not unmarked, f"{name}: toml examples not marked {MARK} at lines {unmarked}"


TOML_EXAMPLES = [
    (path, line, code)
    for path in DOCS
    if path.is_file()
    for line, _, code, _ in _marked(path, ("toml",))
]


@pytest.mark.parametrize(
    ("path", "line", "code"),
    TOML_EXAMPLES,
    ids=[f"{p.name}:{line}" for p, line, _ in TOML_EXAMPLES],
)
def test_toml_examples_are_valid_experiments(path: Path, line: int, code: str):
    from fedglobal.config import ExperimentConfig

    raw = {section: dict(values) for section, values in BASE_EXPERIMENT.items()}
    for section, values in tomllib.loads(code).items():
        raw.setdefault(section, {}).update(values)
    where = f"{path.relative_to(ROOT)}:{line}"
    try:
        ExperimentConfig.from_dict(raw, base_dir=ROOT / "experiments")
    except Exception as exc:
        pytest.fail(f"{where}: not a valid experiment fragment: {exc}")


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
