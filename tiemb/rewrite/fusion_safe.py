"""Fusion of ``tf.nn.safe_embedding_lookup_sparse`` and the feature columns
built on it (``embedding_column``, linear-model categorical columns).

TensorFlow's safe lookup wraps an ``embedding_lookup_sparse`` (matched by
fusion_sparse.py or fusion_weighted.py, the "inner" lookup) like this; the
pass starts from the inner lookup's ids, the SparseFillEmptyRows::

    SparseReshape(indices, dense_shape, [prod(shape[:-1]), shape[-1]])
      ─► retain ids >= 0 (and weights > 0 unless the combiner is sum):
             GatherV2(x, Reshape(Where(cond), [-1]))   for x in indices, ids, weights
      ─► SparseFillEmptyRows(·, ·, ·, 0)              (weights: a second one, filling 1.0)
      ─► inner lookup over the filled ids, segment ids = filled_indices[:, 0]
      ─► Select(Tile(empty_row_indicator), zeros, ·)   (empty rows become zeros)
      ─► Reshape(·, concat(shape[:-1], [dim]))

All of it is TiembLookup's "safe" mode over the original ids, indices and
dense shape: prune, one row per ``dense_shape[0]`` row, zeros for empty rows.
When the sparse input is statically of rank 2 the reshapes are identities and
the whole subgraph goes; otherwise the op reads the SparseReshape's outputs
and the final Reshape stays. The op reads ``indices`` (column 0) and
``dense_shape`` (entry 0) in place. A subgraph that differs from this in any
checked detail is left as it was (the inner lookup is still fused).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Tuple

import numpy as np

from .base import Refused, WideningPass
from .graph import GraphView, canon, tensor_name
from .lookup import SafePart

DT_HALF, DT_INT64 = 19, 9


def _source(view: GraphView, t: str) -> str:
    """The tensor t forwards through Identity and Cast nodes (same values)."""
    node, idx = view.producer(t)
    while node is not None and node.op in ("Identity", "Cast"):
        node, idx = view.input(node, 0)
    return tensor_name(node.name, idx) if node is not None else canon(t)


def _retained(view: GraphView, t: str) -> Optional[Tuple[str, str]]:
    """For t = GatherV2(x, Reshape(Where(cond), [-1]), axis=0): (x, cond), else None."""
    g, idx = view.producer(t)
    if g is None or g.op != "GatherV2" or idx != 0 or g.attr["batch_dims"].i != 0 or not view.const_equals(g.input[2], 0):
        return None
    r, _ = view.input(g, 1)
    if r is None or r.op != "Reshape" or not view.const_equals(r.input[1], [-1]):
        return None
    w, _ = view.input(r, 0)
    if w is None or w.op != "Where":
        return None
    return g.input[0], canon(w.input[0])


def _filter_kind(view: GraphView, cond: str, values: str, weights: Optional[str]) -> Optional[str]:
    """What a retain condition keeps: "ids" (ids >= 0), "weights" (weights > 0), or None."""
    c, idx = view.producer(cond)
    if c is None or idx != 0:
        return None

    def ids_valid(node):
        return node is not None and node.op == "GreaterEqual" and canon(node.input[0]) == canon(values) \
            and view.const_equals(node.input[1], 0)

    if ids_valid(c):
        return "ids"
    if c.op == "LogicalAnd" and weights is not None:
        a, _ = view.input(c, 0)
        ones, _ = view.input(c, 1)   # ones_like(weights, bool)
        shape, _ = view.input(ones, 0) if ones is not None and ones.op == "Fill" else (None, 0)
        if ids_valid(a) and shape is not None and shape.op == "Shape" and canon(shape.input[0]) == canon(weights) \
                and view.const_equals(ones.input[1], True):
            return "ids"
    if c.op == "Greater" and weights is not None and canon(c.input[0]) == canon(weights) \
            and view.const_equals(c.input[1], 0):
        return "weights"
    return None


def _unprune(view: GraphView, indices: str, values: str, weights: Optional[str]):
    """Follows the retain steps back from SparseFillEmptyRows' inputs: the
    tensors before them and the set of filters they applied."""
    kinds = set()
    while True:
        steps = [_retained(view, t) for t in (indices, values, weights) if t is not None]
        if any(s is None for s in steps) or len({cond for _, cond in steps}) != 1:
            return indices, values, weights, kinds
        sources = [src for src, _ in steps]
        kind = _filter_kind(view, steps[0][1], sources[1], sources[2] if weights is not None else None)
        if kind is None:
            return indices, values, weights, kinds
        kinds.add(kind)
        indices, values = sources[0], sources[1]
        weights = sources[2] if weights is not None else None


def _is_column0(view: GraphView, t: str, indices: str) -> bool:
    """t is indices[:, 0] (a StridedSlice, maybe Cast)."""
    s, _ = view.producer(t)
    while s is not None and s.op in ("Cast", "Identity"):
        s, _ = view.input(s, 0)
    return s is not None and s.op == "StridedSlice" and canon(s.input[0]) == canon(indices) \
        and view.const_equals(s.input[1], [0, 0]) and view.const_equals(s.input[2], [0, 1]) \
        and view.const_equals(s.input[3], [1, 1]) and s.attr["shrink_axis_mask"].i == 2 \
        and s.attr["ellipsis_mask"].i == 0 and s.attr["new_axis_mask"].i == 0


def _fold_rank2(view: GraphView, select, indices: str, shape: str):
    # select: the node whose output the safe lookup's result is (Select, or the inner lookup)
    """(final Reshape, original indices, original dense_shape) when the sparse
    input is statically of rank 2, so that SparseReshape and the final
    Reshape are identities; else None."""
    sr, k = view.producer(indices)
    shape_node, shape_idx = view.skip_identity(*view.producer(shape))
    if sr is None or sr.op != "SparseReshape" or k != 0 or shape_node is not sr or shape_idx != 1:
        return None
    s0 = canon(sr.input[1])
    pack, _ = view.input(sr, 2)   # [prod(shape[:rank-1]), shape[rank-1]] with rank - 1 == 1
    if pack is None or pack.op != "Pack" or len(pack.input) != 2:
        return None
    last, _ = view.input(pack, 1)
    if last is None or last.op != "GatherV2" or canon(last.input[0]) != s0 or not view.const_equals(last.input[1], 1):
        return None
    users = view.data_consumers(select.name)
    reshapes = [n for n, i in users if n.op == "Reshape" and i == 0]
    if len(reshapes) != 1 or any(n.op not in ("Reshape", "Shape") for n, _ in users):
        return None
    final = reshapes[0]
    concat, _ = view.input(final, 1)   # concat(shape[:rank-1], shape(select)[1:])
    if concat is None or concat.op != "ConcatV2" or len(concat.input) != 3:
        return None
    head, _ = view.input(concat, 0)
    tail, _ = view.input(concat, 1)
    if head is None or tail is None or head.op != "Slice" or tail.op != "Slice":
        return None
    tail_shape, _ = view.input(tail, 0)
    if _source(view, head.input[0]) != _source(view, s0) \
            or not view.const_equals(head.input[1], [0]) or not view.const_equals(head.input[2], [1]) \
            or tail_shape is None or tail_shape.op != "Shape" or tail_shape.input[0] != select.name \
            or not view.const_equals(tail.input[1], [1]) or not view.const_equals(tail.input[2], [-1]):
        return None
    return final, sr.input[0], sr.input[1]


class SafeLookupFusion(WideningPass):
    idiom = "safe_embedding_lookup_sparse"

    def widen(self, inner):
        """The safe lookup around plain Lookup ``inner``, as a "safe" Lookup;
        None when ``inner`` is not the lookup of a safe_embedding_lookup_sparse;
        Refused when the wrapper differs from TensorFlow's in a checked detail
        (then ``inner`` alone is fused)."""
        view = self.view
        fill, ids_idx = view.skip_identity(*view.producer(inner.ids))
        if fill is None or fill.op != "SparseFillEmptyRows" or ids_idx != 1:
            return None
        users = view.data_consumers(inner.output)
        selects = [n for n, i in users if n.op in ("Select", "SelectV2") and i == 2]
        anchor = selects[0] if len(selects) == 1 else view.nodes[inner.output]

        def leave(reason):
            return Refused(reason + "; the embedding_lookup_sparse inside it is fused, the rest stays TensorFlow ops",
                           anchor.name)

        default_id = self._default_id(inner, anchor, fill)
        if isinstance(default_id, str):
            return leave(default_id)
        if not _is_column0(view, inner.segment_ids, tensor_name(fill.name, 0)):
            return leave("the lookup's segment ids are not filled_indices[:, 0]")
        filled = self._filled_weights(inner, fill)
        if isinstance(filled, str):
            return leave(filled)
        weights, half_weights = filled
        indices, values, weights, kinds = _unprune(view, fill.input[0], fill.input[1], weights)
        if "ids" not in kinds:
            return leave("ids < 0 are not pruned before the lookup as TensorFlow's safe lookup does")
        if inner.weights is not None and ("weights" in kinds) != (inner.combiner != "sum"):
            return leave("weights <= 0 are pruned only when the combiner is not sum; this graph differs")
        output, num_rows = anchor, fill.input[2]
        folded = _fold_rank2(view, anchor, indices, num_rows)
        if folded is not None:
            output, indices, num_rows = folded
        part = SafePart(default_id=default_id, half_weights=inner.weights is not None and half_weights,
                        half_output=inner.part.half_output)
        return replace(inner, output=output.name, ids=values, segment_ids=indices, seg_dtype=DT_INT64,
                       id_dtype=fill.attr["T"].type, weights=weights, num_rows=num_rows, part=part,
                       removable=inner.removable + [anchor.name, inner.output])

    def _default_id(self, inner, anchor, fill):
        """-1 when empty rows are zeroed by Select(Tile(empty_row_indicator), zeros, ·) (default_id None),
        d when they are filled with the constant id d; a reason string otherwise."""
        view = self.view
        if anchor.op in ("Select", "SelectV2"):
            zeros, _ = view.input(anchor, 1)
            tile, _ = view.input(anchor, 0)
            flag, _ = view.input(tile, 0) if tile is not None and tile.op == "Tile" else (None, 0)
            flag_fill, k = view.input(flag, 0) if flag is not None and flag.op == "Reshape" else (None, 0)
            if zeros is None or zeros.op != "ZerosLike" or zeros.input[0] != inner.output or flag_fill is not fill \
                    or k != 2:
                return "empty rows are not zeroed by Select(Tile(SparseFillEmptyRows.empty_row_indicator), zeros, ·)"
            return -1
        default = view.const_value(view.producer(fill.input[3])[0])
        if default is None or np.ndim(default) != 0 or int(default) < 0:
            return "empty rows are filled with something other than a constant default id"
        return int(default)

    def _filled_weights(self, inner, fill):
        """(weights before their SparseFillEmptyRows, they are float16) for a
        weighted inner lookup, (None, False) for an unweighted one; the reason
        when the weights are not filled as TensorFlow does."""
        if inner.weights is None:
            return None, False
        view = self.view
        wfill, widx = view.skip_identity(*view.producer(inner.weights))
        half_weights = wfill is not None and wfill.op == "Cast" and wfill.attr["SrcT"].type == DT_HALF
        if half_weights:                                     # TF casts float16 weights to float32
            wfill, widx = view.skip_identity(*view.input(wfill, 0))
        if wfill is None or wfill.op != "SparseFillEmptyRows" or widx != 1 \
                or not view.const_equals(wfill.input[3], 1.0):
            return "the weights are not filled by SparseFillEmptyRows with weight 1"
        if _source(view, wfill.input[2]) != _source(view, fill.input[2]):
            return "the ids and the weights are filled against different dense shapes"
        return wfill.input[1], half_weights
