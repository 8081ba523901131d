"""Fusion of feature columns' dense-to-sparse conversion into the safe
lookup it feeds (``_to_sparse_input_and_drop_ignore_values`` in TensorFlow's
feature_column code, then fusion_safe.py's pattern); the pass widens a safe
match whose ids are the conversion's GatherNd::

    X ─► NotEqual(X, Cast(-1)) ─► Where ─┬─────────────────────► indices ─► [SparseReshape] ─► safe lookup
    X ─► GatherNd(X, ·) ◄────────────────┘                       values  ─► [SparseReshape] ─►     ▲
    X ─► Shape(X, out_type=int64) ───────────────────────────── dense_shape ─────────────────────────┘

The safe lookup prunes every id < 0 and the conversion drops -1: together
exactly "ids < 0 are padding" over the rows of X (leading dimensions
flattened, as the lookup's SparseReshape does), TiembLookup's dense id
matrix form (a "safe" slot whose row r pools the ids >= 0 of matrix row r;
``PooledPart.id_width``, the op's ``id_widths``). X may be a column slice
``cat[:, i:j]`` of a rank-2 input, read in place.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .base import Refused, WideningPass
from .graph import canon, tensor_name
from .lookup import PooledPart
from .subpatterns import dense_matrix

DT_INT64 = 9


class DenseToSparseFusion(WideningPass):
    idiom = "feature column dense-to-sparse conversion"
    option = "pooled"

    def widen(self, m):
        """The safe Lookup ``m`` reading its ids straight from the dense matrix
        the feature column converted to a SparseTensor; None when its sparse
        input is not that conversion; Refused when it is, but some checked
        detail differs (the safe lookup stays fused over the converted tensor)."""
        view = self.view
        if m.mode != "safe":
            return None
        gnd, gidx = view.skip_identity(*view.producer(m.ids))
        if gnd is None or gnd.op != "GatherNd" or gidx != 0:
            return None
        where, _ = view.input(gnd, 1)
        neq, _ = view.input(where, 0) if where is not None and where.op == "Where" else (None, 0)
        if neq is None or neq.op != "NotEqual":
            return None
        reason = self._check(m, gnd, where, neq)
        if reason is not None:
            return Refused(reason + "; the safe lookup is fused over the converted SparseTensor", m.output)
        x = canon(gnd.input[0])
        found = dense_matrix(view, x)
        ids, column, width = found if found is not None else (x, -1, 0)
        part = PooledPart(default_id=m.part.default_id, half_weights=m.part.half_weights,
                          half_output=m.part.half_output, id_width=width)
        return replace(m, ids=ids, id_column=column, part=part, segment_ids="", num_rows=None,
                       id_dtype=gnd.attr["Tparams"].type, seg_dtype=DT_INT64,
                       removable=m.removable + [gnd.name, where.name, neq.name])

    def _check(self, m, gnd, where, neq):
        """None when the safe lookup reads exactly the conversion of X; else the reason."""
        view = self.view
        x = canon(gnd.input[0])
        if canon(neq.input[0]) != x:
            return "the ids gathered are not the ids compared with the ignore value"
        ignore_node, _ = view.skip_identity(*view.input(neq, 1))
        while ignore_node is not None and ignore_node.op == "Cast":
            ignore_node, _ = view.skip_identity(*view.input(ignore_node, 0))
        ignore = view.const_value(ignore_node)
        if ignore is None or np.ndim(ignore) != 0 or np.asarray(ignore).dtype.kind not in "iu" or not int(ignore) < 0:
            return f"the ignore value is {ignore!r}, not a negative id (a dropped id >= 0 would be a valid row)"
        if m.weights is not None:
            return "weighted: the weights' own conversion is not matched"
        where_t = tensor_name(where.name, 0)
        seg, _ = view.skip_identity(*view.producer(m.segment_ids))
        if seg is not None and seg.name == where.name:                       # rank 2: no SparseReshape
            shape_t = m.num_rows
        elif seg is not None and seg.op == "SparseReshape" and canon(seg.input[0]) == where_t:
            shape_t = seg.input[1]
            if view.through_identity(m.num_rows) != tensor_name(seg.name, 1):
                return "the lookup does not read the SparseReshape of the converted tensor"
        else:
            return "the lookup's indices are not the conversion's Where(NotEqual(ids, ignore))"
        shape, _ = view.skip_identity(*view.producer(shape_t))
        if shape is None or shape.op != "Shape" or canon(shape.input[0]) != x:
            return "the dense shape is not Shape(ids)"
        if not _rank_at_least_2(view, x):
            return "the id tensor's rank is not known to be >= 2"
        return None


def _rank_at_least_2(view, t: str) -> bool:
    """The tensor has rank >= 2 at run time: statically, or as the output of
    the feature column's rank-1 expansion (Merge of the input and its
    ExpandDims; a rank-0 input fails the column's assert before)."""
    if dense_matrix(view, t) is not None:
        return True
    node, _ = view.skip_identity(*view.producer(t))
    if node is None or node.op != "Merge":
        return False
    for i in range(len(node.input)):
        n, _ = view.skip_identity(*view.input(node, i))
        if n is not None and n.op == "ExpandDims":
            return True
    return False
