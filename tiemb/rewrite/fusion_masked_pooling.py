"""Fusion of masked sum / mean pooling of a row gather over a padded dense
id matrix into TiembLookup's dense id matrix form (a "safe" slot whose row r
pools the ids >= 0 of matrix row r; ``PooledPart.id_width``, the op's
``id_widths``), anchored at the ``Sum`` over the id axis.

1. NVIDIA DeepLearningExamples' TF2 Wide&Deep (``_categorical_embedding_lookup``
   for multi-hot features)::

       x ─► [Maximum(x, 0)] ─► GatherV2(table, ·, axis 0) ─────────────┐
       x ─► GreaterEqual(x, 0) ─► Cast(float) ─► ExpandDims(·, -1) ─► Mul ─► Sum(axis 1) ─────────────► (sum)
                                    └─► Sum(axis 1) ─► ExpandDims(·, -1) ─► DivNoNan(Sum, ·) ──────────► (mean)

   Padding is -1; the mask defines which ids count (the ids are read in
   place, a column slice ``x[:, i:j]`` / ``x[:, i:]`` of a wider matrix too).

2. The same pooling with other masks, mapped onto the op's padding rule
   (ids < 0) by one new node, ``SelectV2(mask, gathered ids, -1)``:

       Keras Embedding(mask_zero=True) (tf-keras / deepctr; Keras 3 wraps negative ids first):
       x ─► [SelectV2(x < 0, x + rows, x)] ─► GatherV2(table, ·) ─────────────────────┐
       x ─► NotEqual(x, 0) ─► Cast(float) ─► ExpandDims(·, 2) ─► [Tile(·, [1, 1, dim])] ─► Mul ─► Sum(axis 1)
       deepctr SequencePoolingLayer mean: RealDiv(Sum, AddV2(Sum(mask, -1, keepdims), 1e-8))
       Keras 3 GlobalAveragePooling1D:    Sum(SelectV2(ExpandDims(mask, 2), rows, 0), 1) / Sum(mask, 1)

       deepctr with a length input (VarLenSparseFeat(length_name=...)):
       Less(Range(0, maxlen), ExpandDims(len, -1)) ─► Cast ─► Transpose(0, 2, 1) ─► Tile ─► Mul ─► Sum(axis 1)

   deepctr's count + 1e-8 is the count in float32 (see _EPS_MAX): a mean.
   A division by anything else (a plain division by the count, NaN for rows
   without ids; a length input, which differs from the count above maxlen)
   is not fused: the masked sum is, the division stays TensorFlow's, and the
   report says why.

A pattern that differs in a checked detail is left as it was, with the
reason in ``report.left_alone``. Feature columns' dense-to-sparse conversion,
the other source of the dense id matrix form, is fusion_dense_to_sparse.py.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .base import AnchorPass, Refused
from .graph import GraphView, canon, const_node, tensor_name
from .lookup import Lookup, PooledPart
from .subpatterns import dense_matrix, keras_unwrapped, rank2_placeholder, valid_table

DT_INT64 = 9


def _rank2(view: GraphView, t: str) -> bool:
    """t is a rank-2 input or a slice of one that keeps both dimensions."""
    if dense_matrix(view, t) is not None:
        return True
    s, _ = view.skip_identity(*view.producer(t))
    return s is not None and s.op == "StridedSlice" and rank2_placeholder(view, s.input[0]) \
        and s.attr["shrink_axis_mask"].i == 0 and s.attr["ellipsis_mask"].i == 0 and s.attr["new_axis_mask"].i == 0


# 1 + eps rounds to 1 in float32 for eps <= 2**-24 (half an ulp of 1, ties to
# even), and n + eps to n for every larger count n: dividing by count + eps is
# dividing by the count, and 0 / eps is 0 for rows without ids.
_EPS_MAX = 2.0 ** -24


def _is_zero(view: GraphView, t: str) -> bool:
    """t is the constant 0 (maybe through Cast / Identity, as Keras 3 writes it)."""
    n, _ = view.skip_identity(*view.producer(t))
    while n is not None and n.op == "Cast":
        n, _ = view.skip_identity(*view.input(n, 0))
    v = view.const_value(n)
    return v is not None and v.size >= 1 and not np.any(v)


def _mask_of(view: GraphView, t: str):
    """(bool mask node, Cast node, [nodes]) when t is the float mask broadcast
    over the embedding dimension: ExpandDims(Cast(B, float), -1 | 2),
    optionally Tile(·, [1, 1, dim]) (deepctr); else None."""
    n, _ = view.producer(t)
    nodes = []
    if n is not None and n.op == "Tile":
        multiples = view.const_value(view.producer(n.input[1])[0])
        if multiples is None or np.shape(multiples) != (3,) or list(multiples[:2]) != [1, 1]:
            return None
        nodes.append(n.name)
        n, _ = view.input(n, 0)
    if n is not None and n.op == "Transpose" and view.const_equals(n.input[1], [0, 2, 1]):
        c, _ = view.input(n, 0)                         # deepctr's length mask: sequence_mask(len, T)
        less, _ = view.input(c, 0) if c is not None and c.op == "Cast" and c.attr["DstT"].type == 1 else (None, 0)
        if less is None or less.op != "Less":
            return None
        return less, None, nodes + [n.name]
    if n is None or n.op != "ExpandDims" or not (view.const_equals(n.input[1], -1) or view.const_equals(n.input[1], 2)):
        return None
    nodes.append(n.name)
    c, _ = view.input(n, 0)
    if c is None or c.op != "Cast" or c.attr["DstT"].type != 1:   # DT_FLOAT
        return None
    b, _ = view.input(c, 0)
    if b is None or b.op not in ("GreaterEqual", "NotEqual") or not _is_zero(view, b.input[1]):
        return None
    return b, c, nodes


def _select_mask_of(view: GraphView, t: str):
    """(bool mask node, [nodes]) when t is ExpandDims(B, -1 | 2) with B =
    ids != 0 or ids >= 0: Keras 3's masked pooling selects rather than
    multiplies, SelectV2(mask, rows, 0)."""
    n, _ = view.producer(t)
    if n is None or n.op != "ExpandDims" or not (view.const_equals(n.input[1], -1) or view.const_equals(n.input[1], 2)):
        return None
    b, _ = view.input(n, 0)
    if b is None or b.op not in ("GreaterEqual", "NotEqual") or not _is_zero(view, b.input[1]):
        return None
    return b, [n.name]


def _keras_wrapped(view: GraphView, g: str, table) -> str:
    """The ids before Keras 3's negative-id wrapping of g, or g."""
    x, wrapped = keras_unwrapped(view, g, table)
    return canon(x) if wrapped else canon(g)


def _is_count_plus_eps(view: GraphView, t: str, cast_name: str) -> bool:
    """t is AddV2(Sum(mask, axis -1 | 1, keep_dims), eps) with 0 < eps <= 2**-24 (deepctr's mean)."""
    add, _ = view.producer(t)
    if add is None or add.op not in ("AddV2", "Add"):
        return False
    for a, b in ((0, 1), (1, 0)):
        cnt, _ = view.input(add, a)
        eps_node, _ = view.skip_identity(*view.input(add, b))
        eps = view.const_value(eps_node)
        if cnt is not None and cnt.op == "Sum" and cnt.attr["keep_dims"].b and canon(cnt.input[0]) == cast_name \
                and (view.const_equals(cnt.input[1], -1) or view.const_equals(cnt.input[1], 1)) \
                and eps is not None and np.ndim(eps) == 0 and 0 < float(eps) <= _EPS_MAX:
            return True
    return False


def _is_count_no_nan(view: GraphView, t: str, cast_name: str) -> bool:
    """t is ExpandDims(Sum(mask, axis 1), -1) (NVIDIA's row_lengths)."""
    den, _ = view.producer(t)
    cnt, _ = view.input(den, 0) if den is not None and den.op == "ExpandDims" else (None, 0)
    return cnt is not None and cnt.op == "Sum" and not cnt.attr["keep_dims"].b and canon(cnt.input[0]) == cast_name \
        and (view.const_equals(cnt.input[1], 1) or view.const_equals(cnt.input[1], -2)) \
        and (view.const_equals(den.input[1], -1) or view.const_equals(den.input[1], 1))


def _static_width(view: GraphView, t: str) -> Optional[int]:
    """The static size of dimension 1 of a rank-2 input (or a column slice of one), or None."""
    m = dense_matrix(view, t)
    if m is None:
        return None
    node, _ = view.skip_identity(*view.producer(m[0]))
    k = node.attr["shape"].shape.dim[1].size
    if k < 0:
        return None
    if m[1] < 0:
        return k
    return m[2] if m[2] > 0 else k - m[1]


def _sequence_mask_width(view: GraphView, less) -> Optional[int]:
    """maxlen when ``less`` is tf.sequence_mask's Less(Range(0, maxlen, 1), Cast?(ExpandDims(lengths, -1)))
    with lengths of shape [batch, 1] (a mask of [batch, 1, maxlen]); else None."""
    rng, _ = view.input(less, 0)
    if rng is None or rng.op != "Range" or not _is_zero(view, rng.input[0]) or not view.const_equals(rng.input[2], 1):
        return None
    limit = view.const_value(view.skip_identity(*view.input(rng, 1))[0])
    lens, _ = view.input(less, 1)
    while lens is not None and lens.op == "Cast":
        lens, _ = view.input(lens, 0)
    if limit is None or np.ndim(limit) != 0 or lens is None or lens.op != "ExpandDims" \
            or not view.const_equals(lens.input[1], -1):
        return None
    src, _ = view.skip_identity(*view.input(lens, 0))
    shape = src.attr["shape"].shape if src is not None and src.op == "Placeholder" else None
    if shape is None or shape.unknown_rank or len(shape.dim) != 2 or shape.dim[1].size != 1:
        return None
    return int(limit)


def _squeeze_node(name: str, mask: str):
    """Squeeze(mask, [1]): sequence_mask's [batch, 1, maxlen] as [batch, maxlen]."""
    from tensorflow.core.framework import node_def_pb2

    sq = node_def_pb2.NodeDef(name=name, op="Squeeze", input=[mask])
    sq.attr["T"].type = 10   # DT_BOOL
    sq.attr["squeeze_dims"].list.i.extend([1])
    return sq


def _select_node(name: str, cond: str, ids: str, id_dtype: int):
    """ids where cond, else -1 (padding): the NodeDefs of SelectV2(cond, ids, -1)."""
    from tensorflow.core.framework import node_def_pb2

    minus_one = const_node(f"{name}/padding", np.array(-1, np.int32 if id_dtype == 3 else np.int64))
    sel = node_def_pb2.NodeDef(name=name, op="SelectV2", input=[cond, ids, minus_one.name])
    sel.attr["T"].type = id_dtype
    return [minus_one, sel]



class MaskedPoolingFusion(AnchorPass):
    idiom = "masked pooling"
    option = "pooled"
    search_ops = ("Sum",)

    def match(self, node):
        """A Lookup (dense id matrix form) for a ``Sum`` over axis 1 of a masked
        row gather, widened to the division of a mean by the mask's count; None
        when node is not one; Refused when the gather and the mask are there
        but a checked detail differs."""
        view = self.view
        if node.attr["keep_dims"].b or not (view.const_equals(node.input[1], 1)
                                            or view.const_equals(node.input[1], -2)):
            return None
        mul, _ = view.input(node, 0)
        gather, mask = _masked_gather(view, mul)
        if gather is None or mask is None:
            return None
        found = view.row_gather(gather)
        if found is None or isinstance(found, str):
            return None
        table_node, chain, gathered, id_dtype = found
        valid, cast, mask_nodes = mask
        table = valid_table(view, table_node, (np.float32,))
        if table is None:
            return None
        if not np.isfinite(table).all():
            return Refused("the table has values that are not finite: masked-out rows (0 * row) are not 0 in "
                           "TensorFlow")
        removable = chain + [gather.name, mul.name, table_node.name] + mask_nodes
        read = self._ids(node, valid, gathered, id_dtype, table, removable)
        if isinstance(read, Refused):
            return read
        ids, column, width, extra = read
        output, combiner = self._mean(node, valid, cast, removable)
        return Lookup(output=output.name, combiner=combiner, table_node=table_node.name, table=table, ids=ids,
                      segment_ids="", id_dtype=id_dtype, seg_dtype=DT_INT64, removable=removable,
                      id_column=column, part=PooledPart(id_width=width), extra_nodes=extra)

    def _ids(self, node, valid, gathered, id_dtype, table, removable):
        """(ids, id column, id width, [new NodeDefs]) the slot reads, by the kind
        of mask ``valid`` is; Refused when the mask and the ids do not agree."""
        view = self.view
        x = canon(valid.input[0]) if valid.op != "Less" else canon(gathered)
        if valid.op == "GreaterEqual":        # NVIDIA: padding is -1, the ids read in place
            clip, _ = view.producer(gathered)
            if canon(gathered) == x:
                pass
            elif clip is not None and clip.op == "Maximum" and canon(clip.input[0]) == x \
                    and view.const_equals(clip.input[1], 0):
                removable.append(clip.name)   # padding reads row 0, then masked out
            else:
                return Refused("the gather reads other ids than the mask tests")
            matrix = dense_matrix(view, x)
            if matrix is None:
                return Refused("the ids are not a rank-2 input or a column slice of one")
            return matrix + ([],)
        if valid.op == "Less":                # deepctr's length input: position j < len[r] counts
            width = _sequence_mask_width(view, valid)
            if width is None or not _rank2(view, x) or _static_width(view, x) != width:
                return Refused("the length mask is not tf.sequence_mask(lengths [batch, 1], maxlen) over the "
                               "ids' columns")
            squeeze = _squeeze_node(f"{node.name}/tiemb_valid", valid.name)
            extra = [squeeze] + _select_node(f"{node.name}/tiemb_ids", squeeze.name, gathered, id_dtype)
            return extra[-1].name, -1, 0, extra
        # Keras mask_zero: padding is 0, a valid row of the table
        if _keras_wrapped(view, gathered, table) != x:
            return Refused("the gather reads other ids than the mask tests")
        if not _rank2(view, x):
            return Refused("the ids are not a rank-2 input or a column slice of one")
        # The op's padding is ids < 0: the slot reads SelectV2(ids != 0, gathered ids, -1).
        extra = _select_node(f"{node.name}/tiemb_ids", valid.name, gathered, id_dtype)
        return extra[-1].name, -1, 0, extra

    def _mean(self, node, valid, cast, removable):
        """(output node, combiner): the division of a mean by the mask's count
        when the sum's one reader is that; else the sum (reporting why a
        division that reads it stays a TensorFlow op)."""
        view = self.view
        users = view.data_consumers(node.name)
        divs = [u for u, i in users if u.op in ("DivNoNan", "RealDiv", "Div") and i == 0]
        if len(users) != 1 or len(divs) != 1:
            return node, "sum"
        div = divs[0]
        cast_name = tensor_name(cast.name, 0) if cast is not None else None
        if (div.op == "DivNoNan" and _is_count_no_nan(view, div.input[1], cast_name)) or \
                (div.op != "DivNoNan" and _is_count_plus_eps(view, div.input[1], cast_name)):
            removable.append(node.name)
            return div, "mean"
        if valid.op == "Less":
            self.leave(node.name, "the mean divides by the length input (+ eps), not by the count of positions it "
                       "masks (they differ for a length above maxlen or below 0): the sum is fused, the division "
                       "stays a TensorFlow op")
        elif div.op == "DivNoNan":
            self.leave(node.name, "the masked sum is divided by something other than the mask's count: the sum is "
                       "fused, the division stays a TensorFlow op")
        else:
            self.leave(node.name, "the masked sum is divided with a plain division by something other than the "
                       "mask's count plus an epsilon below 2**-24 (a count alone gives NaN for rows without ids, "
                       "the op zeros): the sum is fused, the division stays a TensorFlow op")
        return node, "sum"


def _masked_gather(view: GraphView, mul):
    """(gather node, (bool mask node, Cast node | None, [mask nodes])) for the
    pooled product: Mul(rows, float mask) or SelectV2(mask, rows, 0); the mask
    is None when the gather is there but the mask is not recognised."""
    gather, mask = None, None
    if mul is not None and mul.op == "Mul":
        for a, b in ((0, 1), (1, 0)):
            g, gi = view.skip_identity(*view.input(mul, a))
            if g is not None and g.op in ("GatherV2", "ResourceGather") and gi == 0:
                gather, mask = g, _mask_of(view, mul.input[b])
    elif mul is not None and mul.op in ("SelectV2", "Select") and _is_zero(view, mul.input[2]):
        g, gi = view.skip_identity(*view.input(mul, 1))
        sel = _select_mask_of(view, mul.input[0])
        if g is not None and g.op in ("GatherV2", "ResourceGather") and gi == 0 and sel is not None:
            gather, mask = g, (sel[0], None, sel[1])
    return gather, mask
