"""Fusion of ``tf.nn.embedding_lookup_sparse`` into TiembLookup.

Patterns replaced, unweighted (the combiner is the reduction op)::

    with Unique (tables that were variables, then frozen):

        ids ─► Unique ─y─► GatherV2(table Const, ·, axis=0) ─► Identity* ─► SparseSegment{Sum,Mean,SqrtN}
                  └─idx────────────────────────────────────────────────────────┘         ▲
        segment_ids (sp_ids.indices[:, 0], maybe Cast) ──────────────────────────────────┘

    fast path (constant tables):

        table Const ─► Identity* ─► SparseSegment{Sum,Mean,SqrtN}(·, ids, segment_ids)

and weighted (rows as above or GatherV2(table, ids); Cast to float32 and
back for float16 tables)::

    rows ─► Cast? ─► Mul(·, Reshape(weights, ...)) ─► SegmentSum(·, segment_ids) ─────────────► (sum)
                                                           └─► DivNoNan(·, SegmentSum(Reshape(weights)))        ─► Cast? (mean)
                                                           └─► DivNoNan(·, Sqrt(SegmentSum(Pow(Reshape(w), 2)))) ─► Cast? (sqrtn)

All compute, for every row r up to max(segment_ids), the combiner over
w[j] * table[ids[j]] for the j with segment_ids[j] == r: TiembLookup's "plain"
mode, whatever tensors the ids, weights and segment ids come from. Nodes used
outside a pattern are never removed.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .features import feature_of, number_features
from .graph import GraphView, split_input, tensor_name

COMBINERS = {"SparseSegmentSum": "sum", "SparseSegmentMean": "mean", "SparseSegmentSqrtN": "sqrtn"}


@dataclass
class Lookup:
    """One matched lookup."""

    output: str        # the SparseSegment* node whose output the op replaces
    combiner: str
    table_node: str
    table: np.ndarray
    ids: str           # tensor names
    segment_ids: str
    id_dtype: int      # DataType enum of ids
    seg_dtype: int
    removable: List[str] = field(default_factory=list)
    weights: Optional[str] = None   # float32 tensor of per-id weights
    half_output: bool = False       # the output is the float16 Cast of the float32 result
    mode: str = "plain"             # "gather": one row per id (dense_gather.py); "safe" (safe_lookup.py)
    num_rows: Optional[str] = None  # safe mode: the dense_shape (or row count) tensor
    default_id: int = -1            # safe mode: the row of empty samples (-1: zeros)
    half_weights: bool = False      # weights is float16: the op reads it through a Cast to float32
    id_column: int = -1             # ids is a matrix and the slot reads this column of it
    wrap_negative: bool = False     # gather mode: Keras-style negative ids (rows + id)
    id_width: int = -1              # safe mode over a padded dense id matrix (pooled_lookup.py): its width
                                    # from id_column (0: the whole last dimension); -1: not that form
    extra_nodes: list = field(default_factory=list)   # NodeDefs the slot's inputs need (pooled_lookup.py)


@dataclass
class RewriteReport:
    found: int = 0
    replaced: int = 0
    left_alone: List[dict] = field(default_factory=list)   # {"node", "idiom", "reason"}
    ops: List[dict] = field(default_factory=list)          # {"name", "slots"}
    features: int = 0    # most features (distinct id inputs) one op reads: what tiemb/slot_num must allow
    note: str = ""
    dense: dict = field(default_factory=dict)              # the dense backend chosen (saved_model.py)
    # Per replaced lookup: {"output", "idiom", "mode", "combiner", "table", "rows", "dim", "dtype", "ids",
    # "id_column", "weighted"}.
    lookups: List[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"found": self.found, "replaced": self.replaced, "left_alone": self.left_alone, "ops": self.ops,
                "note": self.note, "dense": self.dense, "lookups": self.lookups, "features": self.features}


def _match(view: GraphView, node, report: RewriteReport):
    """A Lookup for a SparseSegment* node, or None (with the reason reported)."""
    def leave(reason):
        report.left_alone.append({"node": node.name, "idiom": "embedding_lookup_sparse", "reason": reason})

    data, data_idx = view.skip_identity(*view.input(node, 0))
    idx_node, idx_out = view.input(node, 1)
    if data is None or idx_node is None or data_idx != 0:
        return leave("inputs are not produced by nodes of this graph")
    removable = []
    # Identity chain between the table (or its gather) and the reduction.
    n, _ = view.input(node, 0)
    while n is not None and n.op == "Identity":
        removable.append(n.name)
        n, _ = view.input(n, 0)
    if data.op == "Const":
        table_node, ids, id_dtype = data, node.input[1], node.attr["Tidx"].type
    elif data.op in ("GatherV2", "ResourceGather"):
        gather = view.row_gather(data)
        if isinstance(gather, str):
            return leave(gather)
        table_node, chain, _, _ = gather
        unique, uy = view.input(data, 1)
        if unique is None or unique.op != "Unique" or uy != 0 or idx_node.name != unique.name or idx_out != 1:
            return leave("the gather's indices are not Unique(ids).y with Unique(ids).idx as segment indices")
        ids, id_dtype = unique.input[0], unique.attr["T"].type
        removable += chain + [data.name, unique.name]
    elif _stitched(view, data):
        return leave("sharded table (embedding_lookup over a list of tables: DynamicPartition ... DynamicStitch): "
                     "the per-shard row gathers are fused, the partitioning and the combiner stay TensorFlow ops")
    else:
        return leave(f"data comes from {data.op}, not a table or a gather from one")
    table = view.table_value(table_node)
    if table is None or table.ndim != 2 or table.dtype not in (np.float32, np.float16):
        return leave("the table is not a 2-D float32/float16 constant")
    removable.append(table_node.name)
    return Lookup(output=node.name, combiner=COMBINERS[node.op], table_node=table_node.name, table=table,
                  ids=ids, segment_ids=node.input[2], id_dtype=id_dtype,
                  seg_dtype=node.attr["Tsegmentids"].type, removable=removable)


def _stitched(view: GraphView, node) -> bool:
    """node is (a reshape of) the DynamicStitch of a sharded embedding_lookup."""
    while node is not None and node.op in ("Reshape", "Identity"):
        node, _ = view.input(node, 0)
    return node is not None and node.op in ("DynamicStitch", "ParallelDynamicStitch")


def _gathered_rows(view: GraphView, node):
    """(table Const, ids tensor, id dtype, removable) behind a weighted lookup's
    gathered rows, or a reason string."""
    removable = []
    n, _ = view.input(node, 0)
    while n is not None and n.op in ("Cast", "Identity"):
        removable.append(n.name)
        n, _ = view.input(n, 0)
    if n is None or n.op not in ("GatherV2", "ResourceGather"):
        return "the weighted rows are not gathered from a table"
    removable.append(n.name)
    idx_node, idx_out = view.input(n, 1)
    gather = view.row_gather(n)
    if not isinstance(gather, str):            # rows gathered straight from the table
        table, chain, ids, id_dtype = gather
        return table, ids, id_dtype, removable + chain
    source, _ = view.skip_identity(*view.input(n, 0))   # rows = GatherV2(GatherV2(table, Unique.y), Unique.idx)
    inner = view.row_gather(source)
    if inner is None:
        return "the weighted rows do not come from a table"
    if isinstance(inner, str):
        return inner
    table, chain, _, _ = inner
    unique, uy = view.input(source, 1)
    if unique is None or unique.op != "Unique" or uy != 0 or idx_node is None or idx_node.name != unique.name \
            or idx_out != 1:
        return "the rows are not gathered through Unique(ids)"
    n2, _ = view.input(n, 0)
    while n2 is not None and n2.op == "Identity":
        removable.append(n2.name)
        n2, _ = view.input(n2, 0)
    removable += chain + [source.name, unique.name]
    return table, unique.input[0], unique.attr["T"].type, removable


def _match_weighted(view: GraphView, root, report: RewriteReport):
    """A weighted Lookup rooted at DivNoNan (mean, sqrtn) or SegmentSum (sum), or None."""
    def leave(reason):
        report.left_alone.append({"node": root.name, "idiom": "embedding_lookup_sparse (weighted)", "reason": reason})

    if root.op == "DivNoNan":
        seg_sum, _ = view.input(root, 0)
        denom, _ = view.input(root, 1)
    else:
        seg_sum, denom = root, None
    if seg_sum is None or seg_sum.op != "SegmentSum":
        return None
    mul, _ = view.input(seg_sum, 0)
    if mul is None or mul.op != "Mul":
        return None
    reshape, _ = view.input(mul, 1)
    if reshape is None or reshape.op != "Reshape":
        return None
    rows = _gathered_rows(view, mul)
    if isinstance(rows, str):
        return leave(rows)
    table_node, ids, id_dtype, removable = rows
    seg = seg_sum.input[1]
    removable += [seg_sum.name, mul.name, reshape.name]

    def weight_sum(n, squared):
        """True when n is SegmentSum(Reshape(w)) (or of Pow(Reshape(w), 2)) over the same segments."""
        if n is None or n.op != "SegmentSum" or n.input[1] != seg:
            return False
        x, _ = view.input(n, 0)
        if squared:
            if x is None or x.op != "Pow":
                return False
            exponent = view.const_value(view.input(x, 1)[0])
            if exponent is None or float(exponent) != 2.0:
                return False
            removable.append(x.name)
            x, _ = view.input(x, 0)
        removable.append(n.name)
        return x is not None and x.name == reshape.name

    if root.op == "DivNoNan":
        if weight_sum(denom, False):
            combiner = "mean"
        elif denom is not None and denom.op == "Sqrt" and weight_sum(view.input(denom, 0)[0], True):
            combiner = "sqrtn"
            removable.append(denom.name)
        else:
            return leave("DivNoNan over a weighted sum that is not a mean or sqrtn of the same weights")
    else:
        combiner = "sum"
    if reshape.attr["T"].type != 1:  # DT_FLOAT
        return leave("the weights are not float32")
    table = view.table_value(table_node)
    if table is None or table.ndim != 2 or table.dtype not in (np.float32, np.float16):
        return leave("the table is not a 2-D float32/float16 constant")
    # The shape arithmetic that broadcasts the weights, if nothing else uses it.
    stack = [reshape.input[1]]
    while stack:
        src = split_input(stack.pop())[0]
        n = view.nodes.get(src)
        if n is not None and n.op not in ("Placeholder", "Const") and n.name not in removable:
            removable.append(n.name)
            stack.extend(n.input)
    output, half = root, False
    consumers = view.data_consumers(root.name)
    if table.dtype == np.float16 and len(consumers) == 1 and consumers[0][0].op == "Cast" \
            and consumers[0][0].attr["DstT"].type == 19:  # DT_HALF: TF casts back to the table dtype
        removable.append(root.name)
        output, half = consumers[0][0], True
    removable.append(table_node.name)
    return Lookup(output=output.name, combiner=combiner, table_node=table_node.name, table=table, ids=ids,
                  segment_ids=seg, id_dtype=id_dtype, seg_dtype=seg_sum.attr["Tindices"].type,
                  removable=removable, weights=reshape.input[0], half_output=half)


def _attr(**kw):
    from tensorflow.core.framework import attr_value_pb2

    out = {}
    for k, v in kw.items():
        a = attr_value_pb2.AttrValue()
        if isinstance(v, tuple) and v[0] == "types":
            a.list.type.extend(v[1])
        elif isinstance(v, list) and v and isinstance(v[0], bool):
            a.list.b.extend(v)
        elif isinstance(v, int):
            a.i = v
        elif isinstance(v, list) and v and isinstance(v[0], int):
            a.list.i.extend(v)
        elif isinstance(v, list):
            a.list.s.extend(s.encode() for s in v)
        out[k] = a
    return out


def _const_node(name: str, value: np.ndarray):
    from tensorflow.core.framework import node_def_pb2
    from tensorflow.python.framework import dtypes, tensor_util

    n = node_def_pb2.NodeDef(name=name, op="Const")
    n.attr["dtype"].type = (dtypes.string if value.dtype == object else dtypes.as_dtype(value.dtype)).as_datatype_enum
    n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
    return n


def rewrite_sparse_lookups(graph_def, store_dir: Optional[str], *, max_batch_size: int, max_nnz: int, prefix: str = "tiemb",
                           half_tables: bool = False, resources=None, device: str = "cpu",
                           slot_num: Optional[int] = None, fuse_outputs: bool = True, pooled: bool = True):
    """Replaces the embedding lookups of a frozen GraphDef: every
    tf.nn.embedding_lookup_sparse (this file) and every row gather from a
    table (Keras Embedding, tf.gather; dense_gather.py).

    All matched lookups become one TiembLookup op; their tables are written to ``store_dir`` (a table store) and leave
    the graph. Returns ``(new_graph_def, RewriteReport)``; the input is not
    modified. A graph with nothing to replace comes back unchanged.

    Args:
        store_dir: where the table store is written (None: nothing is
            written, for analysis such as ``tiemb inspect``); the op reads it from this
            path (a SavedModel export makes it an asset).
        max_batch_size, max_nnz: the engine's sizes (see EngineConfig): most
            samples per call, most ids per sample and slot.
        slot_num: most features (distinct id inputs) one op serves, written
            to the store; None: the most any op of this graph reads
            (``report.lookups[k]["feature"]`` names each lookup's feature).
        half_tables: store float32 tables as float16 (optimization level 1:
            half the bytes; lookups still accumulate and output float32).
        resources: tables left as variables (too big to freeze): resource
            placeholder name -> numpy value; gathers from them are matched like
            gathers from constants.
        device: "cpu" pins the ops to the CPU kernel; "gpu" leaves them to
            TensorFlow's placement (the op's GPU kernel, on the GPU engine,
            which serves every slot form the CPU engine does).
        pooled: fuse padded dense id matrices (feature columns' dense-to-sparse
            conversion, masked pooling: pooled_lookup.py) into the op.
        fuse_outputs: where the model concatenates, stacks or sums lookup
            outputs right away, the op writes one output laid out as the
            result (output_fusion.py; listed in report.ops[i]["merged"]).
    """
    from tensorflow.core.framework import graph_pb2
    from .. import tf_ops

    view = GraphView(graph_def, resources)
    report = RewriteReport()
    matches: List[Lookup] = []
    for node in graph_def.node:
        if node.op in COMBINERS:
            report.found += 1
            m = _match(view, node, report)
            if m is not None:
                matches.append(m)
    # Weighted: roots first (DivNoNan), then sums not already inside one.
    inside = set()
    for op in ("DivNoNan", "SegmentSum"):
        for node in graph_def.node:
            if node.op != op or node.name in inside:
                continue
            before = len(report.left_alone)
            m = _match_weighted(view, node, report)
            if m is not None or len(report.left_alone) > before:
                report.found += 1
            if m is not None:
                matches.append(m)
                inside.update(m.removable)
    # safe_embedding_lookup_sparse / feature columns: widen the inner lookup
    # to the whole safe subgraph where it is TensorFlow's.
    from .safe_lookup import match_safe

    matches = [match_safe(view, m, report) or m for m in matches]
    # Padded dense id matrices: the feature columns' conversion, masked pooling.
    from .pooled_lookup import fuse_pooled

    inside.update(name for m in matches for name in m.removable)
    if pooled:
        matches = fuse_pooled(view, graph_def, matches, inside, report)
    # Dense row gathers, except those inside the sparse patterns above.
    from .dense_gather import match_gather

    inside.update(name for m in matches for name in m.removable)
    for node in graph_def.node:
        m = match_gather(view, node, inside, report)
        if m is not None:
            matches.append(m)
    if not matches:
        report.note = ("no embedding lookups found; the model is unchanged" if not report.found else
                       "no embedding lookup could be replaced (see left_alone); the model is unchanged")
        return copy.deepcopy(graph_def), report

    # Tables: one file per distinct constant, named after it.
    files: Dict[str, str] = {}
    tables: Dict[str, np.ndarray] = {}
    for m in matches:
        if m.table_node not in files:
            fname = re.sub(r"[^A-Za-z0-9_.-]", "_", m.table_node) + ".tiemb"
            files[m.table_node] = fname
            tables[fname] = m.table.astype(np.float16) if half_tables else m.table
    idioms = {"plain": "embedding_lookup_sparse", "safe": "safe_embedding_lookup_sparse", "gather": "gather"}
    added = {n.name: n for m in matches for n in m.extra_nodes}
    keys = [feature_of(view, m.ids, m.id_column, added) for m in matches]
    report.lookups = [{"output": m.output, "idiom": "pooled id matrix" if m.id_width >= 0 else idioms[m.mode],
                       "mode": m.mode, "combiner": m.combiner,
                       "table": m.table_node, "rows": int(m.table.shape[0]), "dim": int(m.table.shape[1]),
                       "dtype": str(m.table.dtype), "ids": m.ids, "id_column": m.id_column,
                       "segment_ids": m.segment_ids or None, "num_rows": m.num_rows,
                       "weighted": m.weights is not None, "feature": name, "feature_key": key,
                       "id_width": m.id_width}
                      for m, (key, name) in zip(matches, keys)]
    levels = _levels(view, matches)
    features = {}   # per op level: per slot its feature index, and how many features the op reads
    for level in set(levels):
        features[level] = number_features([keys[k][0] for k, lv in enumerate(levels) if lv == level])
    report.features = max(count for _, count in features.values())
    if store_dir is not None:
        tf_ops.write_store(store_dir, tables, max_batch_size=max_batch_size,
                           slot_num=slot_num or report.features, max_nnz=max_nnz)

    # One op per dependency level (normally one op in all: one engine call for
    # the whole batch); a lookup whose inputs need another's output goes into
    # a later op, so the rewritten graph has no cycle.
    ops, rename, weight_casts = [], {}, []
    for level in sorted(set(levels)):
        group = [m for m, k in zip(matches, levels) if k == level]
        op, casts = _lookup_op(f"{prefix}/lookup_{level}", prefix, group, files, features[level][0])
        if device != "gpu":   # the GPU engine serves every slot form: a GPU target keeps TensorFlow's placement
            op.device = "/device:CPU:0"
        ops.append(op)
        weight_casts += casts
        rename.update({m.output: tensor_name(op.name, s) for s, m in enumerate(group)})
        report.ops.append({"name": op.name, "slots": [m.output for m in group]})
    report.replaced += len(matches)
    constants = {f"{prefix}/store": np.array(os.path.abspath(store_dir).encode() if store_dir else b"", dtype=object),
                 f"{prefix}/no_weights": np.zeros([0], np.float32),
                 f"{prefix}/no_rows": np.array(-1, np.int64),
                 f"{prefix}/no_segments": np.zeros([0], np.int64)}
    used_inputs = {i for op in ops for i in op.input}
    new_nodes = [_const_node(name, value) for name, value in constants.items() if name in used_inputs] \
        + weight_casts + ops + [n for m in matches for n in m.extra_nodes]
    op_of = {m.output: ops[sorted(set(levels)).index(k)].name for m, k in zip(matches, levels)}

    # Everything a replaced output was computed from may go once unused,
    # except graph inputs.
    candidates = {name for m in matches for name in m.removable}
    stack, seen = [m.output for m in matches], set()
    while stack:
        n = view.nodes.get(stack.pop())
        if n is None or n.name in seen or n.op in ("Placeholder", "PlaceholderWithDefault"):
            continue
        seen.add(n.name)
        stack.extend(split_input(i)[0] for i in n.input if not i.startswith("^"))
    candidates |= seen
    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    removed = set(op_of)
    for node in out.node:
        for i, inp in enumerate(node.input):
            src, idx, control = split_input(inp)
            if not control and src in rename and idx == 0:
                node.input[i] = rename[src]
    kept = [nd for nd in out.node if nd.name not in removed]
    while True:
        used = {split_input(i)[0] for nd in kept + new_nodes for i in nd.input if not i.startswith("^")}
        drop = {nd.name for nd in kept if nd.name in candidates and nd.name not in used}
        if not drop:
            break
        removed |= drop
        kept = [nd for nd in kept if nd.name not in drop]
    # Control edges: onto a removed node they now wait for the op that
    # replaced it; out of a removed node (an Assert guarding the ids, say)
    # the op takes them over, so nothing that used to run is skipped.
    owner = {name: op_of.get(name, ops[0].name) for name in removed}
    inherited = {}
    for nd in graph_def.node:
        if nd.name in removed:
            for inp in nd.input:
                src = split_input(inp)[0]
                if inp.startswith("^") and src not in removed:
                    inherited.setdefault(owner[nd.name], []).append("^" + src)
    for nd in kept + ops:
        inputs = [("^" + owner[split_input(i)[0]]) if i.startswith("^") and split_input(i)[0] in removed else i
                  for i in nd.input] + inherited.get(nd.name, [])
        seen, unique = set(), []
        for i in inputs:   # several control edges may now name the same node: keep one
            if i.startswith("^") and (i in seen or i[1:] == nd.name):
                continue
            seen.add(i)
            unique.append(i)
        del nd.input[:]
        nd.input.extend(unique)
    del out.node[:]
    out.node.extend(kept + new_nodes)
    if fuse_outputs:
        from .output_fusion import fuse_lookup_outputs

        out = fuse_lookup_outputs(out, report)
    return out, report


def _levels(view: GraphView, matches: List[Lookup]) -> List[int]:
    """Per lookup, 0 unless its inputs depend on another lookup's output
    (then one more than the deepest such lookup)."""
    outputs = {m.output: k for k, m in enumerate(matches)}
    memo: Dict[str, frozenset] = {}

    def upstream(name: str) -> frozenset:
        """Indices of the lookups whose outputs ``name`` depends on."""
        stack, order = [name], []
        while stack:    # iterative post-order: graphs can be deep
            n = stack.pop()
            if n in memo or n not in view.nodes:
                continue
            pending = [split_input(i)[0] for i in view.nodes[n].input if split_input(i)[0] not in memo]
            if pending and n not in order:
                order.append(n)
                stack.append(n)
                stack.extend(pending)
                continue
            deps = set()
            for i in view.nodes[n].input:
                src = split_input(i)[0]
                deps |= memo.get(src, frozenset())
                if src in outputs:
                    deps.add(outputs[src])
            memo[n] = frozenset(deps)
        return memo.get(name, frozenset())

    # Inputs the rewrite adds (pooled_lookup.py) depend on what they read.
    extra = {n.name: n for m in matches for n in m.extra_nodes}

    def sources(t):
        node = split_input(t)[0]
        if node not in extra:
            return [t]
        return [x for i in extra[node].input if not i.startswith("^") for x in sources(i)]

    deps = []
    for m in matches:
        d = set()
        for t in [x for t in [m.ids, m.segment_ids, m.weights, m.num_rows] if t for x in sources(t)]:
            if t:
                d |= upstream(split_input(t)[0]) | ({outputs[split_input(t)[0]]} if split_input(t)[0] in outputs else set())
        deps.append(d)
    levels: List[Optional[int]] = [None] * len(matches)

    def level(k: int) -> int:
        if levels[k] is None:
            levels[k] = 1 + max((level(j) for j in deps[k]), default=-1)
        return levels[k]

    return [level(k) for k in range(len(matches))]


def _lookup_op(name: str, prefix: str, group: List[Lookup], files: Dict[str, str], features: List[int]):
    """The TiembLookup NodeDef serving ``group`` (``features``: per slot its
    feature index), and the Casts of its float16 weights."""
    from tensorflow.core.framework import node_def_pb2, types_pb2

    n = len(group)
    op = node_def_pb2.NodeDef(name=name, op="TiembLookup")
    op.input.append(f"{prefix}/store")
    op.input.extend(m.ids for m in group)
    op.input.extend(m.segment_ids or f"{prefix}/no_segments" for m in group)
    casts = []
    for s, m in enumerate(group):
        if m.half_weights:
            cast = node_def_pb2.NodeDef(name=f"{name}/weights_{s}", op="Cast", input=[m.weights])
            cast.attr["SrcT"].type, cast.attr["DstT"].type = types_pb2.DT_HALF, types_pb2.DT_FLOAT
            casts.append(cast)
    cast_of = {c.input[0]: c.name for c in casts}
    op.input.extend(cast_of.get(m.weights, m.weights) if m.weights else f"{prefix}/no_weights" for m in group)
    op.input.extend(m.num_rows or f"{prefix}/no_rows" for m in group)
    half = types_pb2.DT_HALF
    for key, val in _attr(N=n, Tids=("types", [m.id_dtype for m in group]),
                          Tsegs=("types", [m.seg_dtype for m in group]), tables=[files[m.table_node] for m in group],
                          dims=[int(m.table.shape[1]) for m in group], combiners=[m.combiner for m in group],
                          modes=[m.mode for m in group], default_ids=[m.default_id for m in group],
                          weighted=[m.weights is not None for m in group],
                          id_columns=[m.id_column for m in group], wrap_negative=[m.wrap_negative for m in group],
                          features=list(features),
                          **({"id_widths": [m.id_width for m in group]} if any(m.id_width >= 0 for m in group)
                             else {}),
                          out_types=("types", [half if (m.table.dtype == np.float16 and
                                                        (m.weights is None or m.half_output))
                                               else types_pb2.DT_FLOAT for m in group])).items():
        op.attr[key].CopyFrom(val)
    return op, casts
