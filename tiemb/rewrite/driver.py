"""The rewrite driver: runs the fusion passes in order, groups the matched
lookups into TiembLookup ops, splices them into a copy of the graph, and
returns the tables the ops read; it writes nothing (the caller writes the
table store: sparse_lookup.rewrite_sparse_lookups).

Pass order matters: the sparse lookups first (their gathers are not row
gathers of their own), the safe lookup around them, the padded id matrices,
and the plain row gathers last; a node an earlier match replaces is no
anchor of a later pass. Output fusion (fusion_outputs.py) runs on the
spliced graph.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .features import feature_of, number_features
from .fused_op import lookup_op, shared_constants
from .fusion_dense_to_sparse import DenseToSparseFusion
from .fusion_gather import RowGatherFusion
from .fusion_masked_pooling import MaskedPoolingFusion
from .fusion_outputs import fuse_lookup_outputs
from .fusion_safe import SafeLookupFusion
from .fusion_sparse import SparseLookupFusion
from .fusion_weighted import WeightedSparseLookupFusion
from .graph import GraphView, split_input, tensor_name
from .lookup import Lookup, RewriteReport
from .splice import splice

PASSES = (SparseLookupFusion, WeightedSparseLookupFusion, SafeLookupFusion, DenseToSparseFusion,
          MaskedPoolingFusion, RowGatherFusion)


@dataclass
class StoreContents:
    """What the table store of a rewritten graph must hold: the arguments of
    ``tiemb.store.write_store`` (tables: file name -> [rows, dim] array)."""

    tables: Dict[str, np.ndarray]
    max_batch_size: int
    max_nnz: int
    slot_num: int


@dataclass
class Rewrite:
    """The driver's result: the new graph, the report, and the store contents
    (None when nothing was replaced: no store is needed)."""

    graph_def: object
    report: RewriteReport
    store: Optional[StoreContents] = None
    lookups: List[Lookup] = field(default_factory=list)


def find_lookups(view: GraphView, report: RewriteReport, options: Dict[str, bool], passes=None) -> List[Lookup]:
    """Runs ``passes`` (default ``PASSES``) in order over ``view``: the matched
    lookups, in slot order; ``options``: a pass whose ``option`` is false there
    is skipped. Refusals go to ``report.left_alone``."""
    matches: List[Lookup] = []
    claimed: set = set()
    for cls in PASSES if passes is None else passes:
        if cls.option is None or options.get(cls.option, True):
            matches = cls(view, report).run(matches, claimed)
    return matches


def rewrite(graph_def, store_dir: Optional[str], *, max_batch_size: int, max_nnz: int, prefix: str = "tiemb",
            half_tables: bool = False, resources=None, device: str = "cpu", slot_num: Optional[int] = None,
            fuse_outputs: bool = True, pooled: bool = True, passes=None) -> Rewrite:
    """Replaces the embedding lookups of a frozen GraphDef by TiembLookup ops
    and returns a ``Rewrite``: the new graph, the report, and the tables with
    the sizes the store must record (``store``; None when nothing was
    replaced, and then the graph is an unchanged copy). Writes nothing; the
    input graph is not modified.

    Args:
        store_dir: the store path written into the graph for the ops to read
            (None: an empty path, for analysis).
        max_batch_size, max_nnz: the engine's sizes, passed on to ``store``.
        prefix: name prefix of the nodes the rewrite adds.
        half_tables: return float32 tables as float16 (optimization level 1).
        resources: resource placeholder name -> numpy value of tables left as
            variables; gathers from them are matched like gathers from constants.
        device: "cpu" pins the ops to the CPU kernel; "gpu" leaves placement to TensorFlow.
        slot_num: recorded in ``store``; None: the most features one op reads.
        fuse_outputs: run fusion_outputs.py on the spliced graph.
        pooled: run the passes whose ``option`` is "pooled" (padded dense id matrices).
        passes: the fusion pass classes to run, in order; None: ``PASSES``,
            read at call time.
    """
    view = GraphView(graph_def, resources)
    report = RewriteReport()
    matches = find_lookups(view, report, {"pooled": pooled}, passes)
    if not matches:
        report.note = ("no embedding lookups found; the model is unchanged" if not report.found else
                       "no embedding lookup could be replaced (see left_alone); the model is unchanged")
        return Rewrite(copy.deepcopy(graph_def), report)
    files, tables = table_files(matches, half_tables)
    keys = describe(view, matches, report)
    levels = dependency_levels(view, matches)
    features = {}   # per op level: per slot its feature index, and how many features the op reads
    for level in set(levels):
        features[level] = number_features([keys[k][0] for k, lv in enumerate(levels) if lv == level])
    report.features = max(count for _, count in features.values())
    store = StoreContents(tables, max_batch_size=max_batch_size, max_nnz=max_nnz,
                          slot_num=slot_num or report.features)
    ops, casts, op_of, rename = _build_ops(matches, levels, features, files, prefix, device, report)
    new_nodes = shared_constants(prefix, store_dir, {i for op in ops for i in op.input}) \
        + casts + ops + [n for m in matches for n in m.extra_nodes]
    out = splice(graph_def, view, matches, ops, new_nodes, op_of, rename)
    if fuse_outputs:
        out = fuse_lookup_outputs(out, report)
    return Rewrite(out, report, store, matches)


def table_files(matches: List[Lookup], half_tables: bool):
    """One store file per distinct table, named after its node: (table node ->
    file name, file name -> array; float16 where ``half_tables``)."""
    files: Dict[str, str] = {}
    tables: Dict[str, np.ndarray] = {}
    for m in matches:
        if m.table_node not in files:
            fname = re.sub(r"[^A-Za-z0-9_.-]", "_", m.table_node) + ".tiemb"
            files[m.table_node] = fname
            tables[fname] = m.table.astype(np.float16) if half_tables else m.table
    return files, tables


def describe(view: GraphView, matches: List[Lookup], report: RewriteReport) -> list:
    """Fills ``report.lookups``; returns per lookup its (feature key, feature name)."""
    added = {n.name: n for m in matches for n in m.extra_nodes}
    keys = [feature_of(view, m.ids, m.id_column, added) for m in matches]
    report.lookups = [{"output": m.output, "idiom": m.part.idiom, "mode": m.mode, "combiner": m.combiner,
                       "table": m.table_node, "rows": int(m.table.shape[0]), "dim": int(m.table.shape[1]),
                       "dtype": str(m.table.dtype), "ids": m.ids, "id_column": m.id_column,
                       "segment_ids": m.segment_ids or None, "num_rows": m.num_rows,
                       "weighted": m.weights is not None, "feature": name, "feature_key": key,
                       "id_width": m.part.id_width}
                      for m, (key, name) in zip(matches, keys)]
    return keys


def _build_ops(matches, levels, features, files, prefix, device, report):
    """One op per dependency level (normally one op in all: one engine call
    for the whole batch): (ops, weight Casts, replaced output -> its op's
    name, replaced output -> the op output that replaces it)."""
    ops, casts, rename = [], [], {}
    order = sorted(set(levels))
    for level in order:
        group = [m for m, k in zip(matches, levels) if k == level]
        op, group_casts = lookup_op(f"{prefix}/lookup_{level}", prefix, group, files, features[level][0])
        if device != "gpu":   # the GPU engine serves every slot form: a GPU target keeps TensorFlow's placement
            op.device = "/device:CPU:0"
        ops.append(op)
        casts += group_casts
        rename.update({m.output: tensor_name(op.name, s) for s, m in enumerate(group)})
        report.ops.append({"name": op.name, "slots": [m.output for m in group]})
    report.replaced += len(matches)
    op_of = {m.output: ops[order.index(k)].name for m, k in zip(matches, levels)}
    return ops, casts, op_of, rename


def dependency_levels(view: GraphView, matches: List[Lookup]) -> List[int]:
    """Per lookup, 0 unless its inputs depend on another lookup's output
    (then one more than the deepest such lookup): a lookup whose inputs need
    another's output goes into a later op, so the rewritten graph has no cycle."""
    outputs = {m.output: k for k, m in enumerate(matches)}
    upstream = _upstream_lookups(view, outputs)
    extra = {n.name: n for m in matches for n in m.extra_nodes}

    def sources(t):
        """Inputs the rewrite adds (fusion_masked_pooling.py) depend on what they read."""
        node = split_input(t)[0]
        if node not in extra:
            return [t]
        return [x for i in extra[node].input if not i.startswith("^") for x in sources(i)]

    deps = []
    for m in matches:
        d = set()
        for t in [x for t in [m.ids, m.segment_ids, m.weights, m.num_rows] if t for x in sources(t)]:
            src = split_input(t)[0]
            d |= upstream(src) | ({outputs[src]} if src in outputs else set())
        deps.append(d)
    levels: List[Optional[int]] = [None] * len(matches)

    def level(k: int) -> int:
        if levels[k] is None:
            levels[k] = 1 + max((level(j) for j in deps[k]), default=-1)
        return levels[k]

    return [level(k) for k in range(len(matches))]


def _upstream_lookups(view: GraphView, outputs: Dict[str, int]):
    """A function: node name -> indices of the lookups whose outputs it depends on."""
    memo: Dict[str, frozenset] = {}

    def upstream(name: str) -> frozenset:
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

    return upstream
