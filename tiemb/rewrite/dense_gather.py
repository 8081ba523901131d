"""Fusion of row gathers from a table: Keras ``Embedding``, ``tf.gather(table, ids)``,
``tf.nn.embedding_lookup`` on dense ids.

Pattern replaced::

    table Const ─► Identity* ─► GatherV2(·, ids, axis=0, batch_dims=0) ─► [ids.shape..., dim]
    big-table variable ─► ResourceGather(·, ids, batch_dims=0)          ─► [ids.shape..., dim]

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
    return Lookup(output=node.name, combiner="sum", table_node=table_node.name, table=table, ids=ids,
                  segment_ids="", id_dtype=id_dtype, seg_dtype=9,  # DT_INT64
                  removable=chain + [table_node.name], mode="gather")
