"""Imports flow one way: run/report -> lottery -> training -> pruning, models, data (and the shared
utilities); among the lowest three, models -> pruning (the torch-free shapes use the prunable kinds). A lower layer importing a higher one, even inside a function, would close an import circle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lth"
LAYERS = {  # package -> the lth packages and modules it must never import
    "training": ("lth.lottery", "lth.report", "lth.run"),
    "pruning": ("lth.lottery", "lth.report", "lth.run", "lth.training", "lth.models", "lth.data"),
    "models": ("lth.lottery", "lth.report", "lth.run", "lth.training", "lth.data"),
    "data": ("lth.lottery", "lth.report", "lth.run", "lth.training", "lth.pruning", "lth.models"),
}
UTILITIES = ("results", "figures", "storage", "identity", "config_schema", "tracking", "progress")


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports at run time (inside functions too; not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for body in node.body for n in ast.walk(body)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """lth's modules and the lth modules each imports at run time (a name imported from a package that is a
    module of it counts as that module)."""
    modules = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        found = set()
        for m in imported(path):
            while m and m not in modules:
                m = m.rpartition(".")[0]
            if m and m != name:
                found.add(m)
        graph[name] = found
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected components of more than one module."""
    index, low, stack, out = {}, {}, [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def violations(files, forbidden) -> list[str]:
    return [f"{f.relative_to(SRC)} imports {m}" for f in files for m in sorted(imported(f))
            if any(m == p or m.startswith(p + ".") for p in forbidden)]


def test_lower_layers_never_import_higher_ones():
    bad = [v for package, forbidden in LAYERS.items() for v in violations(sorted((SRC / package).rglob("*.py")), forbidden)]
    assert bad == []


def test_shared_utilities_never_import_the_lottery_or_the_entry_points():
    bad = violations([SRC / f"{name}.py" for name in UTILITIES], ("lth.lottery", "lth.report", "lth.run"))
    assert bad == []


def test_the_check_sees_a_forbidden_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lth.lottery import Lottery\n"
                     "def f():\n    from lth.lottery.branches import order\n")
    assert imported(probe) == {"typing", "typing.TYPE_CHECKING", "lth.lottery.branches", "lth.lottery.branches.order"}


def test_no_module_imports_itself_through_others():
    """No import circle at all, not even through an import inside a function (the lottery's worker building a
    Lottery, a step class choosing its CUDA-graph variant): each dependency is passed or placed downstream."""
    assert circles(import_graph()) == []


def test_the_circle_check_sees_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
