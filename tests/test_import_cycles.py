"""No import cycle between any two modules of streams, bci and offline.

The import graph is read from the source (AST), with top-level and function-level
imports alike: an import moved into a function to dodge a cycle still counts. The
algorithm is that of ``tools/import_cycles.py`` (strongly connected components).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("bci", "offline", "streams")


def _module_of(path: Path) -> str:
    mod = ".".join(path.relative_to(REPO).with_suffix("").parts)
    return mod[: -len(".__init__")] if mod.endswith(".__init__") else mod


def _modules() -> dict[str, Path]:
    return {_module_of(p): p for root in ROOTS for p in sorted((REPO / root).rglob("*.py"))}


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: {project modules it imports}}`` (a package's own ``__init__`` is not an edge)."""
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for n in names:
                while n and n not in mods:
                    n = n.rsplit(".", 1)[0] if "." in n else ""
                if n and n != m and not m.startswith(n + "."):
                    graph[m].add(n)
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10000))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sccs


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_function_level_imports_count(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("def f():\n    from b import g\n    return g\n")
    (tmp_path / "b.py").write_text("import a\n\n\ndef g():\n    return a\n")
    graph = import_graph({"a": tmp_path / "a.py", "b": tmp_path / "b.py"})
    assert graph == {"a": {"b"}, "b": {"a"}}
    assert import_cycles(graph) == [["a", "b"]]


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph(_modules()))
    assert not cycles, "import cycles: " + " | ".join(", ".join(c) for c in cycles)
