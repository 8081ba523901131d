"""Fusion of ``tf.nn.embedding_lookup_sparse`` without weights, anchored at
its reduction (the combiner is the reduction op)::

    with Unique (tables that were variables, then frozen):

        ids ─► Unique ─y─► GatherV2(table Const, ·, axis=0) ─► Identity* ─► SparseSegment{Sum,Mean,SqrtN}
                  └─idx────────────────────────────────────────────────────────┘         ▲
        segment_ids (sp_ids.indices[:, 0], maybe Cast) ──────────────────────────────────┘

    fast path (constant tables):

        table Const ─► Identity* ─► SparseSegment{Sum,Mean,SqrtN}(·, ids, segment_ids)

Both compute, for every row r up to max(segment_ids), the combiner over
table[ids[j]] for the j with segment_ids[j] == r: TiembLookup's "plain" mode,
whatever tensors the ids and segment ids come from. The weighted form is
fusion_weighted.py; the safe lookup around either is fusion_safe.py.
"""

from __future__ import annotations

from .base import AnchorPass, Refused
from .lookup import Lookup
from .subpatterns import valid_table

COMBINERS = {"SparseSegmentSum": "sum", "SparseSegmentMean": "mean", "SparseSegmentSqrtN": "sqrtn"}


class SparseLookupFusion(AnchorPass):
    idiom = "embedding_lookup_sparse"
    search_ops = tuple(COMBINERS)

    def match(self, node):
        view = self.view
        data, data_idx = view.skip_identity(*view.input(node, 0))
        idx_node, idx_out = view.input(node, 1)
        if data is None or idx_node is None or data_idx != 0:
            return Refused("inputs are not produced by nodes of this graph")
        removable = []
        # Identity chain between the table (or its gather) and the reduction.
        n, _ = view.input(node, 0)
        while n is not None and n.op == "Identity":
            removable.append(n.name)
            n, _ = view.input(n, 0)
        if data.op == "Const":
            table_node, ids, id_dtype = data, node.input[1], node.attr["Tidx"].type
        elif data.op in ("GatherV2", "ResourceGather"):
            found = self._through_unique(data, idx_node, idx_out)
            if isinstance(found, Refused):
                return found
            table_node, ids, id_dtype, chain = found
            removable += chain
        elif _stitched(view, data):
            return Refused("sharded table (embedding_lookup over a list of tables: DynamicPartition ... "
                           "DynamicStitch): the per-shard row gathers are fused, the partitioning and the combiner "
                           "stay TensorFlow ops")
        else:
            return Refused(f"data comes from {data.op}, not a table or a gather from one")
        table = valid_table(view, table_node)
        if table is None:
            return Refused("the table is not a 2-D float32/float16 constant")
        removable.append(table_node.name)
        return Lookup(output=node.name, combiner=COMBINERS[node.op], table_node=table_node.name, table=table,
                      ids=ids, segment_ids=node.input[2], id_dtype=id_dtype,
                      seg_dtype=node.attr["Tsegmentids"].type, removable=removable)

    def _through_unique(self, gather, idx_node, idx_out):
        """(table node, ids, id dtype, [nodes]) for GatherV2(table, Unique(ids).y)
        whose rows the reduction reads at Unique(ids).idx; else Refused."""
        view = self.view
        found = view.row_gather(gather)
        if isinstance(found, str):
            return Refused(found)
        table_node, chain, _, _ = found
        unique, uy = view.input(gather, 1)
        if unique is None or unique.op != "Unique" or uy != 0 or idx_node.name != unique.name or idx_out != 1:
            return Refused("the gather's indices are not Unique(ids).y with Unique(ids).idx as segment indices")
        return table_node, unique.input[0], unique.attr["T"].type, chain + [gather.name, unique.name]


def _stitched(view, node) -> bool:
    """node is (a reshape of) the DynamicStitch of a sharded embedding_lookup."""
    while node is not None and node.op in ("Reshape", "Identity"):
        node, _ = view.input(node, 0)
    return node is not None and node.op in ("DynamicStitch", "ParallelDynamicStitch")
