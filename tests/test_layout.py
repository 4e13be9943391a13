"""The import graph of fedglobal, clients and strategies: no cycle, no private import.

Issue 16's rules, checked on the source with ``ast``: imports inside functions
count (a lazy import that closes a cycle is still a cycle in the design);
imports under ``if TYPE_CHECKING:`` do not. There are no cycles and no private
imports across modules: a new one fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fedglobal", "clients", "strategies")


def _modules(root: Path) -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _source(module: str, node: ast.ImportFrom, mods: dict[str, Path]) -> str | None:
    if not node.level:
        return node.module
    base = module.split(".")
    anchor = base if mods[module].name == "__init__.py" else base[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join(anchor + ([node.module] if node.module else []))


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            lines |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
    return lines


def _graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    mods = _modules(root)
    edges: dict[str, set[str]] = {}
    private: list[str] = []
    for module, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_lines(tree)
        out = edges.setdefault(module, set())
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _source(module, node, mods)
                if source is None:
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    targets.append(full if full in mods else source)
                    name = alias.name
                    if name.startswith("_") and not name.startswith("__"):
                        if source in mods and source != module:
                            private.append(f"{module} imports {source}.{name}")
            for target in targets:
                while target and target not in mods:
                    target = target.rpartition(".")[0]
                if target and target != module and not module.startswith(target + "."):
                    out.add(target)
    return edges, private


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan 1972)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def test_no_import_cycle():
    cycles = _cycles(_graph()[0])
    assert not cycles, f"import cycles: {cycles}; give what the modules share a public home"


def test_no_private_import_across_modules():
    private = "\n".join(_graph()[1])
    assert not private, f"private names imported across modules (make them public):\n{private}"


#: Issue 16: the core lives in packages; at most this many modules stay at the top.
MAX_TOP_LEVEL = 8


def test_few_modules_at_fedglobals_top_level():
    top = sorted(p.stem for p in (ROOT / "fedglobal").glob("*.py") if p.stem != "__init__")
    assert len(top) <= MAX_TOP_LEVEL, (
        f"{len(top)} modules at fedglobal/'s top level ({', '.join(top)}): at most "
        f"{MAX_TOP_LEVEL}; put new ones in their package (docs/design-notes.md)"
    )


def test_the_checker_sees_a_cycle_and_a_private_import(tmp_path):
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    package = tmp_path / "fedglobal"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from fedglobal.b import _helper\n")
    (package / "b.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from fedglobal import c\n"
        "def f():\n"
        "    from . import a\n"  # a lazy import closes a cycle too
    )
    (package / "c.py").write_text("from fedglobal import b\n")  # b -> c only for typing
    edges, private = _graph(tmp_path)
    assert _cycles(edges) == [["fedglobal.a", "fedglobal.b"]]
    assert private == ["fedglobal.a imports fedglobal.b._helper"]
