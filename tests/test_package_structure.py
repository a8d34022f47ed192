"""The package reads top-down: no import cycles, modules of a few hundred lines, functions that fit on a screen.

Imports are read with `ast`, top-level and inside functions alike (a function-level import still runs, it only
hides the edge). A package's `__init__` counts as the package, and `from X import name` depends on X (its
`__init__` runs first) and, where `name` is a submodule, on X.name as well."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "plmgen"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that module `name` (file `path`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in known and m != name}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_import_resolution_reads_relative_and_function_level_imports(tmp_path):
    pkg = tmp_path / "plmgen" / "sub"
    pkg.mkdir(parents=True)
    path = pkg / "mod.py"
    path.write_text("from . import other\nfrom ..top import x\ndef f():\n    import plmgen.sub.late\n")
    known = {"plmgen.sub", "plmgen.sub.other", "plmgen.top", "plmgen.sub.late", "plmgen.unused"}
    assert imported_modules("plmgen.sub.mod", path, known) == {"plmgen.sub", "plmgen.sub.other", "plmgen.top",
                                                               "plmgen.sub.late"}


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "plmgen.model" in graph and "plmgen.config" in graph["plmgen.model"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles (dependencies must point one way):\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_module_over_400_lines():
    long = {name: n for name, path in package_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_over_60_lines():
    long = {}
    for name, path in package_modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long[f"{name}.{node.name} (line {node.lineno})"] = n
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
