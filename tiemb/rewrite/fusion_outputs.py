"""Fusion of what a model does with the lookups right after them: the
TiembLookup op writes one output laid out as the model's concatenation. This
pass runs on the spliced graph (driver.py), anchored at the ConcatV2 / Pack /
sum that reads the ops' outputs.

Patterns (``e_k`` a TiembLookup output, possibly through shape-only ops
Identity / Reshape / ExpandDims / Squeeze that nothing else reads)::

    e_1 ─┐                                   TiembLookup ─► [rows, sum(d_k)] ─► Reshape? ─► (consumers)
    e_2 ─┼─► ConcatV2(axis) ─► (consumers)   becomes
    e_3 ─┘

    e_1, e_2, ... ─► Pack(axis) ─► ...       TiembLookup ─► [rows, K * d] ─► Reshape [-1, K, d]

    e_1 ─► AddV2 ─► AddV2 ─► ... ─► ...      TiembLookup ─► [rows, K * d] ─► Reshape [-1, K, d] ─► Sum(axis 1)
    e_2 ───┘        e_3 ─┘                   (Keras ``layers.Add()``; also AddN)

Where only some inputs are lookup outputs (the dense features in W&D's
concatenation, DLRM's bottom-MLP vector in its stack, other terms of a sum),
each contiguous run of two or more of them becomes one block and a smaller
ConcatV2 / AddN keeps the others. The node the model reads keeps its name,
so nothing downstream changes. The slots of one output must have one dtype,
the same row count, and reach the pattern through nothing else: a lookup
output read anywhere else stays a separate output.

A fused concatenation or stack is the same bytes as before. A fused sum adds
the same numbers in another order (a reduction instead of a chain of adds):
equal within float32 rounding.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import numpy as np

from .graph import const_node, split_input, tensor_name

SHAPE_ONLY = ("Identity", "Reshape", "ExpandDims", "Squeeze")
SUMS = ("AddN", "AddV2", "Add")


def _static_shapes(graph_def):
    """tensor name -> TensorShape, by importing the graph (TiembLookup's shape
    function included); None when the graph cannot be imported."""
    import tensorflow as tf

    from .. import tf_ops

    if not tf_ops.available():
        return None
    tf_ops.load()
    g = tf.Graph()
    with g.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")

    def shape(tensor: str):
        node, idx, _ = split_input(tensor)
        return g.get_operation_by_name(node).outputs[idx].shape

    return shape


class _Graph:
    """Tensor-level consumers of a GraphDef being edited."""

    def __init__(self, graph_def):
        self.nodes = {n.name: n for n in graph_def.node}
        self.uses: Dict[str, List[Tuple[object, int]]] = defaultdict(list)   # tensor -> [(node, input index)]
        self.control_uses: Dict[str, int] = defaultdict(int)
        for n in graph_def.node:
            for i, inp in enumerate(n.input):
                src, idx, control = split_input(inp)
                if control:
                    self.control_uses[src] += 1
                else:
                    self.uses[tensor_name(src, idx)].append((n, i))

    def only_use(self, tensor: str):
        """(node, input index) when exactly one data input anywhere reads ``tensor``."""
        uses = self.uses.get(tensor, [])
        return uses[0] if len(uses) == 1 else None

    def main_use(self, tensor: str):
        """(node, input index, [Shape nodes]): the one data reader of ``tensor``
        besides Shape nodes that only feed its row count on (a feature
        column's reshape to [batch, dim]: they read the same row count from
        the merged output)."""
        uses, shapes = [], []
        for node, i in self.uses.get(tensor, []):
            (shapes if node.op == "Shape" and self._rows_only(node) else uses).append((node, i))
        return (uses[0][0], uses[0][1], [n for n, _ in shapes]) if len(uses) == 1 else None

    def _rows_only(self, shape_node) -> bool:
        """Every reader of ``shape_node`` takes element 0 (StridedSlice [0:1])."""
        from tensorflow.python.framework import tensor_util

        readers = self.uses.get(shape_node.name, [])
        for node, i in readers:
            if node.op != "StridedSlice" or i != 0:
                return False
            for k, want in ((1, 0), (2, 1), (3, 1)):
                c = self.nodes.get(split_input(node.input[k])[0])
                if c is None or c.op != "Const" or \
                        tensor_util.MakeNdarray(c.attr["value"].tensor).reshape(-1).tolist() != [want]:
                    return False
        return bool(readers) and not self.control_uses.get(shape_node.name, 0)


def _row_width(shape) -> Optional[int]:
    """Elements per row of a [rows, ...] shape with known trailing dims, or None."""
    if shape.rank is None or shape.rank < 2 or any(d is None for d in shape.as_list()[1:]):
        return None
    return int(np.prod(shape.as_list()[1:]))


def _axis(node, graph: _Graph, rank: int) -> Optional[int]:
    """The constant axis of a ConcatV2 (last input) or Pack (attribute), normalised; None if not constant."""
    if node.op == "Pack":
        a = node.attr["axis"].i
        return a + rank + 1 if a < 0 else a
    src = graph.nodes.get(split_input(node.input[node.attr["N"].i])[0])   # after the N values
    if src is None or src.op != "Const":
        return None
    from tensorflow.python.framework import tensor_util

    a = int(tensor_util.MakeNdarray(src.attr["value"].tensor))
    return a + rank if a < 0 else a


def fuse_lookup_outputs(graph_def, report) -> object:
    """Merges TiembLookup outputs that feed one ConcatV2 / Pack / sum into one
    output per run (see the module doc). Returns the new GraphDef (the input is
    not modified); ``report.ops[i]`` gains ``num_outputs`` and ``merged``: per
    merged output ``{"output", "pattern", "into", "slots"}`` (slots as the
    replaced lookup outputs). A graph that cannot be imported (no op library)
    comes back unchanged."""
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    ops = {op["name"]: op for op in report.ops}
    for op in report.ops:
        op.setdefault("num_outputs", len(op["slots"]))
        op.setdefault("merged", [])
    shape_of = _static_shapes(out)
    if shape_of is None:
        return out
    graph = _Graph(out)
    lookups = [n for n in out.node if n.op == "TiembLookup" and n.name in ops and not n.attr["slot_outputs"].list.i]
    # Per slot: where its value ends up (the pattern input it is), through which shape-only nodes.
    ends: Dict[str, tuple] = {}   # end tensor -> (op, slot, consumer, input index, chain, Shape readers)
    for op in lookups:
        dims = list(op.attr["dims"].list.i)
        for s in range(op.attr["N"].i):
            t, chain, shapes = tensor_name(op.name, s), [], []
            width = _row_width(shape_of(t))
            if width != dims[s]:
                continue                    # e.g. gather slots with several ids per row
            while True:
                use = graph.main_use(t)
                if use is None:
                    break
                node, i, readers = use
                if node.op not in SHAPE_ONLY or i != 0 or graph.control_uses.get(node.name, 0) or \
                        _row_width(shape_of(tensor_name(node.name, 0))) != width:
                    break
                chain.append(node)
                shapes += readers
                t = tensor_name(node.name, 0)
            use = graph.main_use(t)
            if use is not None and use[0].op in ("ConcatV2", "Pack") + SUMS:
                ends[t] = (op, s, use[0], use[1], chain, shapes + use[2])

    merged: Dict[str, List[Tuple[List[int], str, str]]] = defaultdict(list)   # op -> [(slots, pattern, into)]
    new_nodes, drop, replace = [], set(), {}
    for node in list(out.node):
        if node.op in ("ConcatV2", "Pack"):
            _fuse_concat(node, graph, shape_of, ends, merged, new_nodes, drop, replace)
        elif node.op in SUMS and not _inside_sum(node, graph, shape_of):
            _fuse_sum(node, graph, shape_of, ends, merged, new_nodes, drop, replace)
    if not merged:
        return out
    for op in lookups:
        if op.name in merged:
            _rebuild_op(op, merged[op.name], ops[op.name], out, new_nodes, drop, replace)
    nodes = [replace.get(n.name, n) for n in out.node if n.name not in drop]
    del out.node[:]
    out.node.extend(nodes + new_nodes)
    return out


def _reshape(name: str, tensor: str, shape: List[int], dtype: int, new_nodes: list) -> str:
    from tensorflow.core.framework import node_def_pb2

    new_nodes.append(const_node(f"{name}/shape", np.array(shape, np.int32)))
    r = node_def_pb2.NodeDef(name=name, op="Reshape", input=[tensor, f"{name}/shape"])
    r.attr["T"].type, r.attr["Tshape"].type = dtype, 3   # DT_INT32
    new_nodes.append(r)
    return name


def _runs(node, ends, first: int, last: int):
    """Maximal runs [i, j) of inputs first..last-1 that are ends of one op's slots of one dtype."""
    runs, i = [], first
    while i < last:
        e = ends.get(_t(node.input[i]))
        j = i + 1
        if e is not None:
            dtype = e[0].attr["out_types"].list.type[e[1]]
            while j < last:
                f = ends.get(_t(node.input[j]))
                if f is None or f[0] is not e[0] or f[0].attr["out_types"].list.type[f[1]] != dtype:
                    break
                j += 1
            if j - i >= 2:
                runs.append((i, j))
        i = j
    return runs


def _claim(tensors, ends, merged, drop, pattern: str, into: str):
    """Records the slots behind ``tensors`` (ends of one op's slots) as one
    merged output; returns the placeholder name its readers use until the op
    is rebuilt."""
    op = ends[tensors[0]][0]
    key = f"{op.name}/merged_{len(merged[op.name])}"
    for t in tensors:
        drop.update(c.name for c in ends[t][4])
        for shape in ends[t][5]:     # the row count, now of the merged output
            shape.input[0] = key
    merged[op.name].append(([ends[t][1] for t in tensors], pattern, into))
    return key


def _t(inp: str) -> str:
    """An input string as a tensor name ('x:0' and 'x' alike)."""
    src, idx, _ = split_input(inp)
    return tensor_name(src, idx)


def _fuse_concat(node, graph, shape_of, ends, merged, new_nodes, drop, replace):
    """ConcatV2 along a feature axis, or Pack of [rows, ...] tensors along one (module doc)."""
    from tensorflow.core.framework import node_def_pb2

    n = node.attr["N"].i
    in_shape = shape_of(node.input[0])
    if in_shape.rank is None:
        return
    rank = in_shape.rank
    axis = _axis(node, graph, rank)
    if axis is None or axis < 1:
        return
    dtype = node.attr["T"].type
    runs = []
    for run in _runs(node, ends, 0, n):
        shapes = [shape_of(node.input[k]).as_list() for k in range(*run)]
        # Each input's row must be one contiguous block of the result's row:
        # only size-1 dimensions between the rows and the axis.
        if all(len(s) == rank and all(d == 1 for d in s[1:axis]) and None not in s[1:] for s in shapes):
            runs.append((run, shapes))
    if not runs:
        return
    pattern = "stack" if node.op == "Pack" else "concat"
    blocks = {}
    for run, shapes in runs:
        key = _claim([_t(node.input[k]) for k in range(*run)], ends, merged, drop, pattern, node.name)
        rest = shapes[0][1:]
        if node.op == "Pack":     # [rows] + S[1:axis] + [K] + S[axis:]
            block = [-1] + rest[:axis - 1] + [len(shapes)] + rest[axis - 1:]
        else:                     # the inputs' shape with the axis summed
            block = [-1] + rest[:axis - 1] + [sum(s[axis] for s in shapes)] + rest[axis:]
        blocks[run[0]] = (run, key, block)
    whole = len(runs) == 1 and runs[0][0] == (0, n)
    control = [i for i in node.input if i.startswith("^")]
    if whole:
        run, key, block = blocks[0]
        if len(block) == 2:       # the merged output is the result as it is
            r = node_def_pb2.NodeDef(name=node.name, op="Identity", input=[key] + control)
            r.attr["T"].type = dtype
        else:
            r = node_def_pb2.NodeDef(name=node.name, op="Reshape", input=[key, f"{node.name}/tiemb_shape"] + control)
            r.attr["T"].type, r.attr["Tshape"].type = dtype, 3
            new_nodes.append(const_node(f"{node.name}/tiemb_shape", np.array(block, np.int32)))
        replace[node.name] = r
        return
    inputs, k = [], 0
    while k < n:
        if k in blocks:
            run, key, block = blocks[k]
            inputs.append(key if len(block) == 2 else
                          _reshape(f"{node.name}/tiemb_block_{k}", key, block, dtype, new_nodes))
            k = run[1]
            continue
        if node.op == "Pack":     # a stacked input is that input with a new axis
            e = node_def_pb2.NodeDef(name=f"{node.name}/tiemb_expand_{k}", op="ExpandDims",
                                     input=[node.input[k], f"{node.name}/tiemb_axis"])
            e.attr["T"].type, e.attr["Tdim"].type = dtype, 3
            new_nodes.append(e)
            inputs.append(e.name)
        else:
            inputs.append(node.input[k])
        k += 1
    c = node_def_pb2.NodeDef(name=node.name, op="ConcatV2")
    c.input.extend(inputs + ([node.input[n]] if node.op == "ConcatV2" else [f"{node.name}/tiemb_axis"]))
    c.input.extend(control)
    c.attr["T"].type, c.attr["N"].i = dtype, len(inputs)
    c.attr["Tidx"].type = node.attr["Tidx"].type if node.op == "ConcatV2" else 3
    if node.op == "Pack":
        new_nodes.append(const_node(f"{node.name}/tiemb_axis", np.array(axis, np.int32)))
    replace[node.name] = c


def _elementwise_sum(node, shape_of) -> bool:
    """An add whose data inputs all have its output's shape (no broadcasting)."""
    if node is None or node.op not in SUMS:
        return False
    want = shape_of(tensor_name(node.name, 0)).as_list()
    return all(shape_of(i).as_list() == want for i in node.input if not i.startswith("^"))


def _inside_sum(node, graph, shape_of) -> bool:
    """``node`` is an inner add of a larger elementwise sum (fused from that sum's root)."""
    use = graph.only_use(node.name)
    return use is not None and not graph.control_uses.get(node.name, 0) and _elementwise_sum(node, shape_of) \
        and _elementwise_sum(use[0], shape_of)


def _sum_terms(node, graph, shape_of):
    """The terms of the elementwise sum rooted at ``node`` (in order) and its inner adds."""
    terms, inner, stack = [], [], list(reversed([i for i in node.input if not i.startswith("^")]))
    while stack:
        t = stack.pop()
        src = graph.nodes.get(split_input(t)[0])
        if src is not None and split_input(t)[1] == 0 and _inside_sum(src, graph, shape_of):
            inner.append(src)
            stack.extend(reversed([i for i in src.input if not i.startswith("^")]))
            continue
        terms.append(t)
    return terms, inner


def _fuse_sum(node, graph, shape_of, ends, merged, new_nodes, drop, replace):
    """A sum (AddN, or a tree of AddV2) of lookup outputs of one shape."""
    from tensorflow.core.framework import node_def_pb2

    want = shape_of(tensor_name(node.name, 0)).as_list()
    if len(want) < 2 or None in want[1:] or not _elementwise_sum(node, shape_of):
        return
    terms, inner = _sum_terms(node, graph, shape_of)
    # Group the lookup terms of one op and dtype, wherever they are in the sum.
    by_op: Dict[Tuple[str, int], List[int]] = defaultdict(list)
    for k, t in enumerate(terms):
        e = ends.get(_t(t))
        if e is not None and e[2].name in {node.name} | {n.name for n in inner}:
            by_op[(e[0].name, e[0].attr["out_types"].list.type[e[1]])].append(k)
    groups = [ks for ks in by_op.values() if len(ks) >= 2]
    if not groups:
        return
    dtype, width = node.attr["T"].type, int(np.prod(want[1:]))
    summed, used = [], set()
    for ks in groups:
        key = _claim([_t(terms[k]) for k in ks], ends, merged, drop, "sum", node.name)
        base = f"{node.name}/tiemb_sum_{len(summed)}"
        x = _reshape(f"{base}/rows", key, [-1, len(ks), width], dtype, new_nodes)
        new_nodes.append(const_node(f"{base}/axis", np.array(1, np.int32)))
        s = node_def_pb2.NodeDef(name=f"{base}/sum", op="Sum", input=[x, f"{base}/axis"])
        s.attr["T"].type, s.attr["Tidx"].type, s.attr["keep_dims"].b = dtype, 3, False
        new_nodes.append(s)
        summed.append(_reshape(f"{base}/shape", s.name, [-1] + want[1:], dtype, new_nodes) if len(want) > 2
                      else s.name)
        used.update(ks)
    rest = [t for k, t in enumerate(terms) if k not in used] + summed
    drop.update(n.name for n in inner)
    control = [i for n in [node] + inner for i in n.input if i.startswith("^")]
    if len(rest) == 1:
        r = node_def_pb2.NodeDef(name=node.name, op="Identity", input=rest + control)
        r.attr["T"].type = dtype
    else:
        r = node_def_pb2.NodeDef(name=node.name, op="AddN", input=rest + control)
        r.attr["T"].type, r.attr["N"].i = dtype, len(rest)
    replace[node.name] = r


def _rebuild_op(op, groups, entry, out, new_nodes, drop, replace):
    """The op with one output per merged group (after its separate outputs),
    and every reader of a separate output pointed at its new index."""
    n = op.attr["N"].i
    dims = list(op.attr["dims"].list.i)
    types = list(op.attr["out_types"].list.type)
    in_group = {s for slots, _, _ in groups for s in slots}
    alone = [s for s in range(n) if s not in in_group]
    slot_outputs, slot_offsets, out_types = [0] * n, [0] * n, []
    for s in alone:
        slot_outputs[s] = len(out_types)
        out_types.append(types[s])
    for slots, _, _ in groups:
        col = 0
        for s in slots:
            slot_outputs[s], slot_offsets[s] = len(out_types), col
            col += dims[s]
        out_types.append(types[slots[0]])
    new = type(op)()
    new.CopyFrom(op)
    new.attr["slot_outputs"].list.i.extend(slot_outputs)
    new.attr["slot_offsets"].list.i.extend(slot_offsets)
    del new.attr["out_types"].list.type[:]
    new.attr["out_types"].list.type.extend(out_types)
    replace[op.name] = new
    # Separate outputs move to their new index; merged ones are read by key.
    moved = {tensor_name(op.name, s): tensor_name(op.name, slot_outputs[s]) for s in alone}
    keys = {f"{op.name}/merged_{g}": tensor_name(op.name, len(alone) + g) for g in range(len(groups))}
    for node in list(out.node) + new_nodes:
        target = replace.get(node.name, node)
        for i, inp in enumerate(target.input):
            src, idx, control = split_input(inp)
            if control:
                continue
            t = tensor_name(src, idx)
            if src == op.name and t in moved:
                target.input[i] = moved[t]
            elif t in keys:
                target.input[i] = keys[t]
    slots = entry["slots"]
    entry["num_outputs"] = len(out_types)
    entry["merged"] = [{"output": len(alone) + g, "pattern": pattern, "into": into,
                        "slots": [slots[s] for s in group]} for g, (group, pattern, into) in enumerate(groups)]
