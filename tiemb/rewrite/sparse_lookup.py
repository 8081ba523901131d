"""Fusion of ``tf.nn.embedding_lookup_sparse`` into TiembLookup.

Patterns replaced (unweighted; the combiner is the reduction op)::

    with Unique (tables that were variables, then frozen):

        ids ─► Unique ─y─► GatherV2(table Const, ·, axis=0) ─► Identity* ─► SparseSegment{Sum,Mean,SqrtN}
                  └─idx────────────────────────────────────────────────────────┘         ▲
        segment_ids (sp_ids.indices[:, 0], maybe Cast) ──────────────────────────────────┘

    fast path (constant tables):

        table Const ─► Identity* ─► SparseSegment{Sum,Mean,SqrtN}(·, ids, segment_ids)

Both compute, for every row r up to max(segment_ids), the combiner over
table[ids[j]] for the j with segment_ids[j] == r: TiembLookup's "plain" mode,
whatever tensor the ids and segment ids come from. Weighted lookups
(Mul + SegmentSum + DivNoNan) are found and left alone, with the reason in
the report. Nodes used outside a pattern are never removed.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

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


@dataclass
class RewriteReport:
    found: int = 0
    replaced: int = 0
    left_alone: List[dict] = field(default_factory=list)   # {"node", "idiom", "reason"}
    ops: List[dict] = field(default_factory=list)          # {"name", "slots"}

    def as_dict(self) -> dict:
        return {"found": self.found, "replaced": self.replaced, "left_alone": self.left_alone, "ops": self.ops}


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
    elif data.op == "GatherV2":
        table_node, _ = view.skip_identity(*view.input(data, 0))
        axis = view.const_value(view.input(data, 2)[0])
        unique, uy = view.input(data, 1)
        if table_node is None or table_node.op != "Const":
            return leave("the gathered table is not a constant (freeze the model's variables first)")
        if axis is None or int(axis) != 0 or data.attr["batch_dims"].i != 0:
            return leave("the gather is not along axis 0")
        if unique is None or unique.op != "Unique" or uy != 0 or idx_node.name != unique.name or idx_out != 1:
            return leave("the gather's indices are not Unique(ids).y with Unique(ids).idx as segment indices")
        ids, id_dtype = unique.input[0], unique.attr["T"].type
        removable += [data.name, unique.name]
    else:
        return leave(f"data comes from {data.op}, not a table or a gather from one")
    table = view.const_value(table_node)
    if table is None or table.ndim != 2 or table.dtype not in (np.float32, np.float16):
        return leave("the table is not a 2-D float32/float16 constant")
    removable.append(table_node.name)
    return Lookup(output=node.name, combiner=COMBINERS[node.op], table_node=table_node.name, table=table,
                  ids=ids, segment_ids=node.input[2], id_dtype=id_dtype,
                  seg_dtype=node.attr["Tsegmentids"].type, removable=removable)


def _report_weighted(view: GraphView, report: RewriteReport):
    """Weighted lookups (SegmentSum of a Mul of gathered rows): found, not replaced yet."""
    for node in view.graph_def.node:
        if node.op != "SegmentSum":
            continue
        mul, _ = view.input(node, 0)
        if mul is None or mul.op != "Mul":
            continue
        rows, _ = view.skip_identity(*view.input(mul, 0))
        if rows is not None and rows.op == "GatherV2":
            report.found += 1
            report.left_alone.append({"node": node.name, "idiom": "embedding_lookup_sparse (weighted)",
                                      "reason": "weighted lookups are not fused yet"})


def _attr(**kw):
    from tensorflow.core.framework import attr_value_pb2

    out = {}
    for k, v in kw.items():
        a = attr_value_pb2.AttrValue()
        if isinstance(v, tuple) and v[0] == "type":
            a.type = v[1]
        elif isinstance(v, tuple) and v[0] == "types":
            a.list.type.extend(v[1])
        elif isinstance(v, bool) or (isinstance(v, list) and v and isinstance(v[0], bool)):
            a.list.b.extend(v) if isinstance(v, list) else setattr(a, "b", v)
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


def rewrite_sparse_lookups(graph_def, store_dir: str, *, max_batch_size: int, max_nnz: int, prefix: str = "tiemb"):
    """Replaces the embedding_lookup_sparse lookups of a frozen GraphDef.

    Matched lookups that share id and segment-id dtypes become one TiembLookup
    op; their tables are written to ``store_dir`` (a table store) and leave
    the graph. Returns ``(new_graph_def, RewriteReport)``; the input is not
    modified. A graph with nothing to replace comes back unchanged.

    Args:
        store_dir: where the table store is written; the op reads it from this
            path (a SavedModel export makes it an asset).
        max_batch_size, max_nnz: the engine's buffer sizes (see EngineConfig).
    """
    from tensorflow.core.framework import graph_pb2, node_def_pb2, types_pb2
    from .. import tf_ops

    view = GraphView(graph_def)
    report = RewriteReport()
    matches: List[Lookup] = []
    for node in graph_def.node:
        if node.op in COMBINERS:
            report.found += 1
            m = _match(view, node, report)
            if m is not None:
                matches.append(m)
    _report_weighted(view, report)
    if not matches:
        return copy.deepcopy(graph_def), report

    groups: Dict[tuple, List[Lookup]] = {}
    for m in matches:
        groups.setdefault((m.id_dtype, m.seg_dtype), []).append(m)
    # Tables: one file per distinct constant, named after it.
    files: Dict[str, str] = {}
    tables: Dict[str, np.ndarray] = {}
    for m in matches:
        if m.table_node not in files:
            fname = re.sub(r"[^A-Za-z0-9_.-]", "_", m.table_node) + ".tiemb"
            files[m.table_node] = fname
            tables[fname] = m.table
    slot_num = max(len(g) for g in groups.values())
    tf_ops.write_store(store_dir, tables, max_batch_size=max_batch_size, slot_num=slot_num, max_nnz=max_nnz)

    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    new_nodes = [_const_node(f"{prefix}/store", np.array(os.path.abspath(store_dir).encode(), dtype=object)),
                 _const_node(f"{prefix}/no_weights", np.zeros([0], np.float32)),
                 _const_node(f"{prefix}/no_rows", np.array(-1, np.int64))]
    rename: Dict[str, str] = {}  # replaced tensor -> op output
    for k, ((id_t, seg_t), group) in enumerate(groups.items()):
        op = node_def_pb2.NodeDef(name=f"{prefix}/lookup_{k}", op="TiembLookup")
        n = len(group)
        op.input.append(f"{prefix}/store")
        op.input.extend(m.ids for m in group)
        op.input.extend(m.segment_ids for m in group)
        op.input.extend([f"{prefix}/no_weights"] * n)
        op.input.extend([f"{prefix}/no_rows"] * n)
        half = types_pb2.DT_HALF
        for key, val in _attr(N=n, Tid=("type", id_t), Tseg=("type", seg_t), tables=[files[m.table_node] for m in group],
                              dims=[int(m.table.shape[1]) for m in group], combiners=[m.combiner for m in group],
                              modes=["plain"] * n, default_ids=[-1] * n, weighted=[False] * n,
                              out_types=("types", [half if m.table.dtype == np.float16 else types_pb2.DT_FLOAT
                                                   for m in group])).items():
            op.attr[key].CopyFrom(val)
        new_nodes.append(op)
        for s, m in enumerate(group):
            rename[m.output] = tensor_name(op.name, s)
        report.ops.append({"name": op.name, "slots": [m.output for m in group]})
        report.replaced += n

    # Rewire consumers of the replaced outputs; control edges onto removed
    # nodes move to the op that replaced them.
    removed = {m.output for m in matches}
    candidates = {name for m in matches for name in m.removable}
    replacement_of = {}
    for m in matches:
        op_name = rename[m.output].split(":")[0]
        for name in [m.output] + m.removable:
            replacement_of[name] = op_name
    for node in out.node:
        for i, inp in enumerate(node.input):
            src, idx, control = split_input(inp)
            if control and src in replacement_of:
                node.input[i] = "^" + replacement_of[src]
            elif not control and src in rename and idx == 0:
                node.input[i] = rename[src]
    # Drop the replaced reductions, then pattern nodes nothing uses any more.
    kept = [nd for nd in out.node if nd.name not in removed]
    while True:
        used = {split_input(i)[0] for nd in kept for i in nd.input} | {split_input(i)[0] for nd in new_nodes for i in nd.input}
        drop = {nd.name for nd in kept if nd.name in candidates and nd.name not in used}
        if not drop:
            break
        kept = [nd for nd in kept if nd.name not in drop]
    del out.node[:]
    out.node.extend(kept + new_nodes)
    return out, report
