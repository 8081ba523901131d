"""Fusion of row gathers from a table: Keras ``Embedding``, ``tf.gather(table, ids)``,
``tf.nn.embedding_lookup`` on dense ids.

Pattern replaced::

    table Const ─► Identity* ─► GatherV2(·, ids, axis=0, batch_dims=0) ─► [ids.shape..., dim]

(Keras 3 first wraps negative ids, ``SelectV2(ids < 0, ids + rows, ids)``;
whatever tensor feeds the gather is what the op reads.) The replacement is a
TiembLookup slot in "gather" mode: one output row per id, bit-identical.
Gathers that are part of an embedding_lookup_sparse match are left to that
pattern.
"""

from __future__ import annotations

import numpy as np

from .graph import GraphView


def match_gather(view: GraphView, node, exclude: set, report):
    """A Lookup (mode "gather") for a GatherV2 node, or None."""
    from .sparse_lookup import Lookup

    if node.op != "GatherV2" or node.name in exclude:
        return None
    removable = []
    n, _ = view.input(node, 0)
    while n is not None and n.op == "Identity":
        removable.append(n.name)
        n, _ = view.input(n, 0)
    if n is None or n.op != "Const":
        return None
    table = view.const_value(n)
    if table is None or table.ndim != 2 or table.dtype not in (np.float32, np.float16):
        return None
    report.found += 1
    axis = view.const_value(view.input(node, 2)[0])
    if axis is None or int(axis) != 0 or node.attr["batch_dims"].i != 0:
        report.left_alone.append({"node": node.name, "idiom": "gather", "reason": "not a gather of rows (axis 0)"})
        return None
    removable.append(n.name)
    return Lookup(output=node.name, combiner="sum", table_node=n.name, table=table, ids=node.input[1],
                  segment_ids="", id_dtype=node.attr["Tindices"].type, seg_dtype=9,  # DT_INT64
                  removable=removable, mode="gather")
