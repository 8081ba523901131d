"""Fusion of row gathers from a table: Keras ``Embedding``, ``tf.gather(table, ids)``,
``tf.nn.embedding_lookup`` on dense ids, anchored at the gather::

    table Const ─► Identity* ─► GatherV2(·, ids, axis=0, batch_dims=0) ─► [ids.shape..., dim]
    big-table variable ─► ResourceGather(·, ids, batch_dims=0)          ─► [ids.shape..., dim]

Keras 3 first wraps negative ids, ``SelectV2(ids < 0, ids + rows, ids)``,
and its ids are usually a column of one input matrix, ``cat[:, i]``: both are
folded into the slot (``wrap_negative``; the op reads the column in place),
so a Keras model's whole embedding layer is the one op. The replacement is a
TiembLookup slot in "gather" mode: one output row per id, bit-identical.
Gathers that are part of an earlier pass's match are left to that pass (the
driver runs this pass last).
"""

from __future__ import annotations

import numpy as np

from .base import AnchorPass, Refused
from .lookup import GatherPart, Lookup
from .subpatterns import keras_unwrapped, valid_table

DT_INT64 = 9


class RowGatherFusion(AnchorPass):
    idiom = "gather"
    search_ops = ("GatherV2", "ResourceGather")

    def match(self, node):
        view = self.view
        gather = view.row_gather(node)
        if gather is None:
            return None
        table = valid_table(view, view.input(node, 0)[0])
        if table is None:
            return None                      # not a table: a gather of something else
        if isinstance(gather, str):
            return Refused(gather)
        table_node, chain, ids, id_dtype = gather
        ids, wrap = keras_unwrapped(view, ids, table)
        ids, column = _column(view, ids)
        return Lookup(output=node.name, combiner="sum", table_node=table_node.name, table=table, ids=ids,
                      segment_ids="", id_dtype=id_dtype, seg_dtype=DT_INT64, removable=chain + [table_node.name],
                      id_column=column, part=GatherPart(wrap_negative=wrap))


def _column(view, ids: str):
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
