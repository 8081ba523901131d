"""The dense part of an optimized graph, lowered by TensorFlow's own XLA
bridge to StableHLO (export side: needs TensorFlow).

The dense part is everything the TiembLookup ops feed: the rewritten graph
with the ops' outputs turned into placeholders. Its float constants (the
trained weights) become arguments too, so the module text stays small and a
bundle can swap weights without lowering again.
"""

from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..rewrite.graph import split_input

# Float constants with at least this many elements become arguments; smaller
# ones (epsilons, scalars) stay in the module where XLA folds them.
WEIGHT_MIN_ELEMENTS = 2


def lookup_placeholder(op: str, k: int) -> str:
    """The placeholder that stands for output ``k`` of TiembLookup ``op``."""
    return f"{op}/out_{k}"


def dense_part(graph_def, ops: Sequence[dict] = ()):
    """The rewritten graph with its TiembLookup ops' outputs turned into
    placeholders ``<op>/out_<k>``: the dense part alone (``ops`` is unused,
    kept for the benchmark's call)."""
    from tensorflow.core.framework import graph_pb2, node_def_pb2

    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    lookups = {n.name: n for n in out.node if n.op == "TiembLookup"}
    del out.node[:]
    for n in graph_def.node:
        if n.name in lookups:
            for k, t in enumerate(n.attr["out_types"].list.type):
                p = node_def_pb2.NodeDef(name=lookup_placeholder(n.name, k), op="Placeholder")
                p.attr["dtype"].type = t
                out.node.append(p)
            continue
        c = out.node.add()
        c.CopyFrom(n)
        inputs = []
        for inp in c.input:
            src, idx, control = split_input(inp)
            if src in lookups and control:
                continue          # nothing to wait for: the lookups are given
            inputs.append(f"{lookup_placeholder(src, idx)}" if src in lookups else inp)
        del c.input[:]
        c.input.extend(inputs)
    return out


def pruned(graph_def, fetches: Sequence[str]):
    """``graph_def`` cut down to what ``fetches`` (tensor names) need."""
    import tensorflow as tf

    return tf.compat.v1.graph_util.extract_sub_graph(graph_def, sorted({split_input(t)[0] for t in fetches}))


def weights_to_placeholders(graph_def) -> Tuple[object, Dict[str, np.ndarray]]:
    """A copy of ``graph_def`` whose float constants (see WEIGHT_MIN_ELEMENTS)
    are placeholders; and {placeholder name: value}, in graph order."""
    from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2
    from tensorflow.python.framework import tensor_util

    floats = (types_pb2.DT_FLOAT, types_pb2.DT_HALF, types_pb2.DT_BFLOAT16, types_pb2.DT_DOUBLE)
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    del out.node[:]
    weights = {}
    for n in graph_def.node:
        if n.op == "Const" and n.attr["dtype"].type in floats:
            value = tensor_util.MakeNdarray(n.attr["value"].tensor)
            if value.size >= WEIGHT_MIN_ELEMENTS and n.attr["dtype"].type != types_pb2.DT_BFLOAT16:
                p = node_def_pb2.NodeDef(name=n.name, op="Placeholder")
                p.attr["dtype"].type = n.attr["dtype"].type
                p.attr["shape"].shape.CopyFrom(tensor_util.make_tensor_proto(value).tensor_shape)
                out.node.append(p)
                weights[n.name] = value
                continue
        out.node.add().CopyFrom(n)
    return out, weights


def placeholders(graph_def) -> List[str]:
    return [n.name for n in graph_def.node if n.op == "Placeholder"]


def lower(graph_def, args: Sequence[Tuple[str, tuple, str]], fetches: Sequence[str]) -> str:
    """StableHLO text of ``graph_def`` from placeholder tensors ``args``
    ((tensor name, static shape, dtype name) in argument order) to
    ``fetches``, lowered by ``tf.function(jit_compile=True)``. The module's
    results are ``fetches`` in order (a tuple when several).

    Raises ValueError with XLA's reason when the graph cannot be compiled
    (an op XLA has no kernel for, a shape that stays dynamic)."""
    import tensorflow as tf

    names = [a[0] for a in args]
    # The argument placeholders leave the graph (their consumers are mapped
    # to the function's arguments): a Placeholder kept in the body is an op
    # XLA has no kernel for.
    mapped = {split_input(n)[0] for n in names}
    body_gd = type(graph_def)()
    body_gd.CopyFrom(graph_def)
    del body_gd.node[:]
    body_gd.node.extend(n for n in graph_def.node if n.name not in mapped)

    def body(*tensors):
        return tf.compat.v1.import_graph_def(body_gd, input_map=dict(zip(names, tensors)),
                                             return_elements=list(fetches), name="")

    specs = [tf.TensorSpec(shape, tf.as_dtype(dtype)) for _, shape, dtype in args]
    fn = tf.function(body, jit_compile=True, autograph=False)
    try:
        return fn.experimental_get_compiler_ir(*specs)(stage="stablehlo")
    except Exception as e:  # XLA's errors come as several exception types
        raise ValueError(_first_lines(str(e))) from None


def _first_lines(text: str, n: int = 4) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("\t")]
    return " ".join(lines[:n])[:600]


_DOT = re.compile(r"stablehlo\.(dot_general|dot|convolution)\b")


def dots_not_highest(text: str) -> List[str]:
    """The dot / convolution lines of a module whose precision is not
    HIGHEST for both operands: where XLA may use TF32 (Hopper's default for
    float32) or bf16 passes."""
    bad = []
    for line in text.splitlines():
        if _DOT.search(line) and "precision = [HIGHEST, HIGHEST]" not in line:
            bad.append(line.strip()[:200])
    return bad


# Ops whose output shape depends on input values: a Shape() above one of
# them is not known from the bucket's input shapes alone.
_VALUE_SHAPED = {"Where", "Unique", "UniqueV2", "UniqueWithCounts", "SparseFillEmptyRows", "DynamicPartition",
                 "SparseSegmentSum", "SparseSegmentMean", "SparseSegmentSqrtN", "SegmentSum", "SegmentMean",
                 "GatherNd", "Unpack", "Fill", "Range", "SparseReshape", "SparseSlice", "BooleanMask"}
_SHAPE_OPS = {"Shape", "ShapeN", "Rank", "Size"}


class _ShapeLogic:
    """Which nodes of a graph compute from input *shapes* only (foldable to
    constants once the bucket fixes the shapes), memoised; iterative walks,
    as graphs are deep."""

    def __init__(self, graph_def):
        from ..rewrite.graph import GraphView

        self.view = GraphView(graph_def)
        self._value_shaped, self._fold = {}, {}

    def _deps(self, n: str) -> List[str]:
        return [split_input(i)[0] for i in self.view.nodes[n].input if not i.startswith("^")]

    def value_shaped(self, name: str) -> bool:
        """Any value-shaped op among the data ancestors of node ``name``."""
        memo, stack, order = self._value_shaped, [name], []
        while stack:
            n = stack.pop()
            if n in memo or n not in self.view.nodes:
                continue
            deps = self._deps(n)
            pending = [d for d in deps if d not in memo and d in self.view.nodes]
            if pending and n not in order:
                order.append(n)
                stack.append(n)
                stack.extend(pending)
                continue
            memo[n] = self.view.nodes[n].op in _VALUE_SHAPED or any(memo.get(d, False) for d in deps)
        return memo.get(name, False)

    def foldable(self, name: str) -> bool:
        memo, stack = self._fold, [name]
        while stack:
            n = stack[-1]
            if n in memo:
                stack.pop()
                continue
            node = self.view.nodes[n]
            if node.op == "Const":
                memo[n] = True
            elif node.op in ("Placeholder", "PlaceholderWithDefault") or node.op.startswith("Tiemb"):
                memo[n] = False
            elif node.op in _SHAPE_OPS:
                memo[n] = not any(self.value_shaped(d) for d in self._deps(n))
            else:
                pending = [d for d in self._deps(n) if d not in memo]
                if pending:
                    stack.extend(pending)
                    continue
                deps = self._deps(n)
                memo[n] = bool(deps) and all(memo[d] for d in deps)
            stack.pop()
        return memo[name]

    def frontier(self, needed, fetches: Sequence[str]) -> List[str]:
        """Tensors a non-foldable node (or a fetch) reads from a foldable non-Const node."""
        found = []
        for node in needed.node:
            if self.foldable(node.name):
                continue
            for i in node.input:
                src, idx, control = split_input(i)
                if not control and self.foldable(src) and self.view.nodes[src].op != "Const":
                    found.append(f"{src}:{idx}")
        for t in fetches:
            if self.foldable(split_input(t)[0]) and self.view.nodes[split_input(t)[0]].op != "Const":
                found.append(t if ":" in t else t + ":0")
        return sorted(set(found))


def fold_shapes(graph_def, args: Sequence[Tuple[str, tuple, str]], fetches: Sequence[str]):
    """``graph_def`` with everything computed from input *shapes* only
    (``Shape``/``Rank``/``Size`` of inputs with the bucket's static shapes,
    and what follows from them: ``tf.cond`` on a rank, reshape targets)
    replaced by constants, then pruned to ``fetches``. TF1 control flow
    (``Switch``/``Merge``, which XLA cannot compile) left around such
    shape logic by feature columns goes with it."""
    import tensorflow as tf

    logic = _ShapeLogic(graph_def)
    needed = pruned(graph_def, fetches)
    frontier = logic.frontier(needed, fetches)
    if not frontier:
        return needed, list(fetches)
    names = [a[0] for a in args]

    def body(*tensors):
        return tf.compat.v1.import_graph_def(graph_def, input_map=dict(zip(names, tensors)),
                                             return_elements=frontier, name="")

    fn = tf.compat.v1.wrap_function(body, [tf.TensorSpec(s, tf.as_dtype(d)) for _, s, d in args])
    values = fn(*[tf.zeros(s, tf.as_dtype(d)) for _, s, d in args])
    return _with_constants(graph_def, logic, dict(zip(frontier, values)), fetches)


def _with_constants(graph_def, logic: _ShapeLogic, values: dict, fetches: Sequence[str]):
    """``graph_def`` reading ``values`` (frontier tensor -> its value) as
    constants instead of computing them, pruned to ``fetches``."""
    from tensorflow.core.framework import node_def_pb2
    from tensorflow.python.framework import tensor_util

    const_of = {}
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    for t, v in values.items():
        name = f"{split_input(t)[0]}/folded_{split_input(t)[1]}"
        c = node_def_pb2.NodeDef(name=name, op="Const")
        c.attr["dtype"].type = v.dtype.as_datatype_enum
        c.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(v.numpy()))
        out.node.append(c)
        const_of[t] = name
    nodes = logic.view.nodes
    for node in out.node:
        if node.name in nodes and logic.foldable(node.name):
            continue
        inputs = []
        for i in node.input:
            src, idx, control = split_input(i)
            if control and src in nodes and logic.foldable(src):
                continue          # shape logic (a cond's switch, an assert on a rank) folded away
            inputs.append(const_of.get(f"{src}:{idx}", i) if not control else i)
        del node.input[:]
        node.input.extend(inputs)
    fetches = [const_of.get(t if ":" in t else t + ":0", t) for t in fetches]
    return pruned(out, fetches), fetches
