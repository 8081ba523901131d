"""Fusion of row gathers from a table: Keras ``Embedding``, ``tf.gather(table, ids)``,
``tf.nn.embedding_lookup`` on dense ids.

Pattern replaced::

    table Const ─► Identity* ─► GatherV2(·, ids, axis=0, batch_dims=0) ─► [ids.shape..., dim]
    big-table variable ─► ResourceGather(·, ids, batch_dims=0)          ─► [ids.shape..., dim]

Keras 3 first wraps negative ids, ``SelectV2(ids < 0, ids + rows, ids)``,
and its ids are usually a column of one input matrix, ``cat[:, i]``: both are
folded into the slot (``wrap_negative``; the op reads the column in place),
so a Keras model's whole embedding layer is the one op. The replacement is a
TiembLookup slot in "gather" mode: one output row per id, bit-identical.
Gathers that are part of an embedding_lookup_sparse match are left to that
pattern.
"""

from __future__ import annotations

import numpy as np

from .graph import GraphView


def match_gather(view: GraphView, node, exclude: set, report):
    """A Lookup (mode "gather") for a GatherV2 / ResourceGather node, or None."""
    from .sparse_lookup import Lookup

    if node.op not in ("GatherV2", "ResourceGather") or node.name in exclude:
        return None
    gather = view.row_gather(node)
    if gather is None:
        return None
    table = view.table_value(view.input(node, 0)[0])
    if table is None or table.ndim != 2 or table.dtype not in (np.float32, np.float16):
        return None                      # not a table: a gather of something else
    report.found += 1
    if isinstance(gather, str):
        report.left_alone.append({"node": node.name, "idiom": "gather", "reason": gather})
        return None
    table_node, chain, ids, id_dtype = gather
    ids, wrap = _unwrapped(view, ids, table)
    ids, column = _column(view, ids)
    return Lookup(output=node.name, combiner="sum", table_node=table_node.name, table=table, ids=ids,
                  segment_ids="", id_dtype=id_dtype, seg_dtype=9,  # DT_INT64
                  removable=chain + [table_node.name], mode="gather", id_column=column, wrap_negative=wrap)


def _static(view: GraphView, tensor: str):
    """The value of a small int expression the graph computes from constants
    and table shapes (Const, Cast, Identity, Shape of a table, StridedSlice of
    those), or None."""
    node, _ = view.producer(tensor)
    if node is None:
        return None
    if node.op == "Const":
        return view.const_value(node)
    if node.op in ("Cast", "Identity"):
        return _static(view, node.input[0])
    if node.op == "Shape":
        table = view.table_value(view.producer(node.input[0])[0])
        return None if table is None else np.array(table.shape, np.int64)
    if node.op == "StridedSlice" and node.attr["shrink_axis_mask"].i == 1 and node.attr["ellipsis_mask"].i == 0 \
            and node.attr["new_axis_mask"].i == 0:
        x, begin = _static(view, node.input[0]), _static(view, node.input[1])
        if x is not None and begin is not None and np.ndim(x) == 1 and np.shape(begin) == (1,) \
                and view.const_equals(node.input[3], [1]):
            return x[int(begin[0])]
    return None


def _unwrapped(view: GraphView, ids: str, table):
    """Keras Embedding wraps negative ids Python-style first:
    SelectV2(ids < 0, ids + rows, ids), rows being the table's row count (a
    constant or Shape(table)[0]). Returns (ids before it, True) for that exact
    pattern, else (ids, False)."""
    sel, idx = view.producer(ids)
    if sel is None or sel.op not in ("SelectV2", "Select") or idx != 0:
        return ids, False
    x = sel.input[2]
    less, _ = view.producer(sel.input[0])
    add, _ = view.producer(sel.input[1])
    if less is None or less.op != "Less" or less.input[0] != x or not view.const_equals(less.input[1], 0):
        return ids, False
    if add is None or add.op not in ("AddV2", "Add") or len(add.input) < 2:
        return ids, False
    a, b = add.input[0], add.input[1]
    rows = table.shape[0]
    other = b if a == x else a if b == x else None
    value = _static(view, other) if other is not None else None
    if value is None or np.ndim(value) != 0 or int(value) != rows:
        return ids, False
    return x, True


def _column(view: GraphView, ids: str):
    """ids = matrix[:, c] of a rank-2 placeholder's value: (matrix, c), else (ids, -1)."""
    s, idx = view.producer(ids)
    if s is None or s.op != "StridedSlice" or idx != 0:
        return ids, -1
    begin = view.const_value(view.producer(s.input[1])[0])
    if begin is None or np.shape(begin) != (2,):
        return ids, -1
    c = int(begin[1])
    if not (view.const_equals(s.input[2], [0, c + 1]) and view.const_equals(s.input[3], [1, 1]) and c >= 0
            and s.attr["begin_mask"].i & 1 and s.attr["end_mask"].i & 1 and s.attr["shrink_axis_mask"].i == 2
            and s.attr["ellipsis_mask"].i == 0 and s.attr["new_axis_mask"].i == 0):
        return ids, -1
    src, _ = view.skip_identity(*view.input(s, 0))
    shape = src.attr["shape"].shape if src is not None and src.op == "Placeholder" else None
    if shape is None or shape.unknown_rank or len(shape.dim) != 2:
        return ids, -1
    return s.input[0], c
