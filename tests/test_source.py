"""Checks on the package's source, read with ``ast``: no import cycles, no function over 50 lines.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_source.py
"""

from __future__ import annotations

import ast

import mnist_cnn
from conftest import ROOT

PACKAGE = ROOT / "mnist_cnn"
MAX_FUNCTION_LINES = 50


def modules() -> dict[str, ast.Module]:
    """Every module of the package by dotted name (its __init__ as ``mnist_cnn``), parsed."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return found


def imported(node: ast.Import | ast.ImportFrom, here: str, known: set[str]) -> set[str]:
    """The package's modules that one import statement in module ``here`` loads."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from . import x, from .x import y
            base = ".".join(here.split(".")[:-node.level] + ([base] if base else []))
        names = [from_import(base, a.name, known) for a in node.names]
    return {n for n in names if n in known}


def from_import(base: str, name: str, known: set[str]) -> str:
    """The module ``from base import name`` loads: the submodule ``base.name`` when there is one (``from mnist_cnn
    import predict``), the module of one of the package's lazy names (``from mnist_cnn import Predictor``), else
    ``base`` itself (``from mnist_cnn.predict import Predictor``, ``from mnist_cnn import MnistCnnError``)."""
    if f"{base}.{name}" in known:
        return f"{base}.{name}"
    if base == "mnist_cnn":
        return mnist_cnn.LAZY.get(name, base)
    return base


def import_graph() -> dict[str, set[str]]:
    """module → the package's modules it imports, at module level or inside a function or class alike.

    Function-level imports count: a cycle through one works only as long as the function is not called while
    the other module is still being imported, and it still ties the two modules into one. The package's
    __init__ is left out: importing any submodule runs it first, so it must not import submodules while it
    runs (tests/test_api.py checks that ``import mnist_cnn`` loads none); its lazy names (``LAZY``) load their
    module on first use, and here they count as an import of that module.
    """
    trees = modules()
    del trees["mnist_cnn"]
    return {name: set().union(*[imported(n, name, set(trees)) for n in ast.walk(tree)
                                if isinstance(n, (ast.Import, ast.ImportFrom))]) - {name}
            for name, tree in trees.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles (a → … → a), found depth first; one whose modules all lie on a cycle already found is
    left out."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                if not any(set(cycle) <= set(c) for c in found):
                    found.append(cycle)
            elif nxt not in done:
                visit(nxt, path + [nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return found


def test_the_graph_sees_function_level_and_lazy_imports():
    graph = import_graph()
    assert "mnist_cnn.checkpoint" in graph["mnist_cnn.engine"]  # imported inside TorchEngine.__init__
    assert "mnist_cnn.predict" in graph["mnist_cnn.cli"]  # imported inside cmd_predict
    statement = ast.parse("from mnist_cnn import Predictor, MnistCnnError, predict").body[0]
    assert imported(statement, "mnist_cnn.serve", set(graph)) == {"mnist_cnn.predict"}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" → ".join(m.removeprefix("mnist_cnn.") for m in c)
                                                    for c in found)


def long_functions(tree: ast.Module, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of each function or method longer than ``limit`` lines, from its ``def`` line
    to its last (decorators not counted); a nested function counts on its own and within its parent."""
    return [(node.name, node.lineno, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > limit]


def test_the_length_check_counts_each_function_and_nested_ones_on_their_own():
    inner = "\n".join(f"        x{i} = {i}" for i in range(4))
    tree = ast.parse(f"def outer():\n    def inner():\n{inner}\n    return inner\n\nasync def short():\n    pass\n")
    assert long_functions(tree, limit=4) == [("outer", 1, 7), ("inner", 2, 5)]


def test_no_function_over_50_lines():
    found = [f"{name}:{line} {func} ({lines} lines)"
             for name, tree in modules().items() for func, line, lines in long_functions(tree)]
    assert not found, f"over {MAX_FUNCTION_LINES} lines, split them: " + "; ".join(found)
