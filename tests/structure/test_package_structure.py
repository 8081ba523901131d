"""The package's shape, read from its source (no TensorFlow needed): who
imports the benchmark harness, import cycles, function lengths (issue 12)."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "tiemb")
MAX_FUNCTION_LINES = 80


def _modules():
    """{module name: (relative path, AST)} of every file of the package."""
    out = {}
    for base, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(base, f)
                rel = os.path.relpath(path, ROOT)
                parts = ["tiemb"] + rel[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts.pop()
                with open(path) as fh:
                    out[".".join(parts)] = (rel, ast.parse(fh.read(), path))
    return out


def _imports(name, rel, tree, known):
    """The tiemb modules ``name`` imports, at the top or inside a function."""
    package = name if rel.endswith("__init__.py") else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def test_only_the_harness_and_the_cli_import_the_harness():
    mods = _modules()
    users = sorted(n for n, (rel, tree) in mods.items()
                   if not n.startswith("tiemb.bench") and n != "tiemb.cli"
                   and any(t.startswith("tiemb.bench") for t in _imports(n, rel, tree, mods)))
    assert users == [], users


def _cycles(graph):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    mods = _modules()
    graph = {n: {t for t in _imports(n, rel, tree, mods) if not n.startswith(t + ".")}   # a package's own init
             for n, (rel, tree) in mods.items()}
    cycles = _cycles(graph)
    assert cycles == [], cycles


def test_functions_are_short():
    over = set()
    for rel, tree in _modules().values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    over.add((rel.replace(os.sep, "/"), node.name))
    assert over == set(), f"functions over {MAX_FUNCTION_LINES} lines: {sorted(over)}"


def test_the_checks_see_what_they_look_for():
    """The scanners on known source: a relative import inside a function is
    found, and a two-module cycle would be."""
    tree = ast.parse("def f():\n    from ..bench import timing\n")
    assert _imports("tiemb.pipeline.x", "pipeline/x.py", tree, {"tiemb.bench", "tiemb.bench.timing"}) == \
        {"tiemb.bench", "tiemb.bench.timing"}
    tree = ast.parse("from . import advise\n")
    assert _imports("tiemb.optimizer", "optimizer.py", tree, {"tiemb.advise"}) == {"tiemb.advise"}
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]


if __name__ == "__main__":
    pytest.main([__file__])
