"""The rewriter's layout (issue 12): passes import only the shared modules,
never each other; no import cycles among tiemb/rewrite's modules; no
function longer than 80 lines. Read from the source, no TensorFlow needed."""

import ast
import os

import tiemb

REWRITE = os.path.join(os.path.dirname(tiemb.__file__), "rewrite")
SHARED = {"base", "graph", "lookup", "subpatterns"}


def _modules():
    """module name -> (AST, names of the tiemb.rewrite modules it imports)."""
    out = {}
    for f in sorted(os.listdir(REWRITE)):
        if not f.endswith(".py"):
            continue
        tree = ast.parse(open(os.path.join(REWRITE, f)).read())
        deps = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.level == 1:
                deps.add(n.module.split(".")[0] if n.module else "__init__")
                if not n.module:
                    deps.update(a.name for a in n.names)
        out[f[:-3]] = (tree, deps)
    return out


def test_fusion_passes_import_only_the_shared_modules():
    mods = _modules()
    passes = [m for m in mods if m.startswith("fusion_")]
    assert len(passes) >= 7, passes
    for m in passes:
        assert mods[m][1] <= SHARED, f"{m} imports {sorted(mods[m][1] - SHARED)}"


def test_no_import_cycles_among_rewrite_modules():
    mods = {m: {d for d in deps if d != m} for m, (_, deps) in _modules().items()}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for d in sorted(mods[m] & set(mods)):
            assert state.get(d) != "open", "import cycle: " + " -> ".join(path + [m, d])
            if d not in state:
                visit(d, path + [m])
        state[m] = "done"

    for m in sorted(mods):
        if m not in state:
            visit(m, [])


def test_functions_are_at_most_80_lines():
    owned_elsewhere = {"saved_model", "frozen_graph"}   # the pipeline's part of the package (issue 12 item 5)
    long = [f"{m}.{n.name}: {n.end_lineno - n.lineno + 1} lines"
            for m, (tree, _) in _modules().items() if m not in owned_elsewhere
            for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and n.end_lineno - n.lineno + 1 > 80]
    assert not long, long
