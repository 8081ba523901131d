"""Fusion of pooled lookups over padded dense id matrices into TiembLookup's
dense id matrix form (a "safe" slot whose row r pools the ids >= 0 of matrix
row r; ``id_width`` on the Lookup, ``id_widths`` on the op).

Two sources of that form:

1. Feature columns' dense-to-sparse conversion feeding a safe lookup
   (``_to_sparse_input_and_drop_ignore_values`` in TensorFlow's
   feature_column code, then safe_lookup.py's pattern)::

       X ─► NotEqual(X, Cast(-1)) ─► Where ─┬─────────────────────► indices ─► [SparseReshape] ─► safe lookup
       X ─► GatherNd(X, ·) ◄────────────────┘                       values  ─► [SparseReshape] ─►     ▲
       X ─► Shape(X, out_type=int64) ───────────────────────────── dense_shape ─────────────────────────┘

   The safe lookup prunes every id < 0 and the conversion drops -1: together
   exactly "ids < 0 are padding" over the rows of X (leading dimensions
   flattened, as the lookup's SparseReshape does). X may be a column slice
   ``cat[:, i:j]`` of a rank-2 input, read in place.

2. Masked sum / mean pooling of a row gather (NVIDIA DeepLearningExamples'
   TF2 Wide&Deep, ``_categorical_embedding_lookup`` for multi-hot features)::

       x ─► [Maximum(x, 0)] ─► GatherV2(table, ·, axis 0) ─────────────┐
       x ─► GreaterEqual(x, 0) ─► Cast(float) ─► ExpandDims(·, -1) ─► Mul ─► Sum(axis 1) ─────────────► (sum)
                                    └─► Sum(axis 1) ─► ExpandDims(·, -1) ─► DivNoNan(Sum, ·) ──────────► (mean)

   Padding is -1; the mask defines which ids count (the ids are read in
   place, a column slice ``x[:, i:j]`` / ``x[:, i:]`` of a wider matrix too).

3. The same pooling with other masks, mapped onto the op's padding rule
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
reason in ``report.left_alone``; nodes used outside a pattern are never
removed (the rewriter drops only what became unused).
"""

from __future__ import annotations

from dataclasses import replace
from typing import List, Optional, Tuple

import numpy as np

from .graph import GraphView, split_input, tensor_name

DT_INT64 = 9


def _canon(t: str) -> str:
    node, idx, _ = split_input(t)
    return tensor_name(node, idx)


def _through_identity(view: GraphView, t: str) -> str:
    node, idx = view.skip_identity(*view.producer(t))
    return tensor_name(node.name, idx) if node is not None else _canon(t)


def _rank2_placeholder(view: GraphView, t: str) -> bool:
    node, _ = view.skip_identity(*view.producer(t))
    if node is None or node.op != "Placeholder":
        return False
    shape = node.attr["shape"].shape
    return not shape.unknown_rank and len(shape.dim) == 2


def dense_matrix(view: GraphView, t: str) -> Optional[Tuple[str, int, int]]:
    """(matrix tensor, first column, width) when t is a rank-2 id matrix the op
    can read in place: a rank-2 input (width 0: all its columns) or its column
    slice ``x[:, i:j]`` (width j - i; ``x[:, i:]``: width 0, the columns from
    i on); None otherwise."""
    if _rank2_placeholder(view, t):
        return _through_identity(view, t), -1, 0
    s, idx = view.skip_identity(*view.producer(t))
    if s is None or s.op != "StridedSlice" or idx != 0:
        return None
    begin = view.const_value(view.producer(s.input[1])[0])
    end = view.const_value(view.producer(s.input[2])[0])
    if begin is None or end is None or np.shape(begin) != (2,) or np.shape(end) != (2,):
        return None
    b, e = int(begin[1]), int(end[1])
    open_end = s.attr["end_mask"].i == 3          # x[:, b:]
    if not (view.const_equals(s.input[3], [1, 1]) and 0 <= b and (open_end or b < e)
            and s.attr["begin_mask"].i == 1 and s.attr["end_mask"].i in (1, 3) and s.attr["shrink_axis_mask"].i == 0
            and s.attr["ellipsis_mask"].i == 0 and s.attr["new_axis_mask"].i == 0):
        return None
    if not _rank2_placeholder(view, s.input[0]):
        return None
    return _through_identity(view, s.input[0]), b, 0 if open_end else e - b


def _rank2(view: GraphView, t: str) -> bool:
    """t is a rank-2 input or a slice of one that keeps both dimensions."""
    if dense_matrix(view, t) is not None:
        return True
    s, _ = view.skip_identity(*view.producer(t))
    return s is not None and s.op == "StridedSlice" and _rank2_placeholder(view, s.input[0]) \
        and s.attr["shrink_axis_mask"].i == 0 and s.attr["ellipsis_mask"].i == 0 and s.attr["new_axis_mask"].i == 0


def _rank_at_least_2(view: GraphView, t: str) -> bool:
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


def match_dense_to_sparse(view: GraphView, m, report):
    """The safe Lookup ``m`` reading its ids straight from the dense matrix the
    feature column converted to a SparseTensor (``_to_sparse_input_and_drop_ignore_values``),
    or None when its sparse input is not that conversion (a reason is reported
    when it is, but some checked detail differs)."""
    if m.mode != "safe":
        return None
    gnd, gidx = view.skip_identity(*view.producer(m.ids))
    if gnd is None or gnd.op != "GatherNd" or gidx != 0:
        return None
    where, _ = view.input(gnd, 1)
    neq, _ = view.input(where, 0) if where is not None and where.op == "Where" else (None, 0)
    if neq is None or neq.op != "NotEqual":
        return None

    def leave(reason):
        report.left_alone.append({"node": m.output, "idiom": "feature column dense-to-sparse conversion",
                                  "reason": reason + "; the safe lookup is fused over the converted SparseTensor"})

    x = _canon(gnd.input[0])
    if _canon(neq.input[0]) != x:
        return leave("the ids gathered are not the ids compared with the ignore value")
    ignore_node, _ = view.skip_identity(*view.input(neq, 1))
    while ignore_node is not None and ignore_node.op == "Cast":
        ignore_node, _ = view.skip_identity(*view.input(ignore_node, 0))
    ignore = view.const_value(ignore_node)
    if ignore is None or np.ndim(ignore) != 0 or np.asarray(ignore).dtype.kind not in "iu" or not int(ignore) < 0:
        return leave(f"the ignore value is {ignore!r}, not a negative id (a dropped id >= 0 would be a valid row)")
    if m.weights is not None:
        return leave("weighted: the weights' own conversion is not matched")
    where_t = tensor_name(where.name, 0)
    seg, _ = view.skip_identity(*view.producer(m.segment_ids))
    shape_t = None
    if seg is not None and seg.name == where.name:                       # rank 2: no SparseReshape
        shape_t = m.num_rows
    elif seg is not None and seg.op == "SparseReshape" and _canon(seg.input[0]) == where_t:
        shape_t = seg.input[1]
        if _through_identity(view, m.num_rows) != tensor_name(seg.name, 1):
            return leave("the lookup does not read the SparseReshape of the converted tensor")
    else:
        return leave("the lookup's indices are not the conversion's Where(NotEqual(ids, ignore))")
    shape, _ = view.skip_identity(*view.producer(shape_t))
    if shape is None or shape.op != "Shape" or _canon(shape.input[0]) != x:
        return leave("the dense shape is not Shape(ids)")
    if not _rank_at_least_2(view, x):
        return leave("the id tensor's rank is not known to be >= 2")
    found = dense_matrix(view, x)
    ids, column, width = found if found is not None else (x, -1, 0)
    return replace(m, ids=ids, id_column=column, id_width=width, segment_ids="", num_rows=None,
                   id_dtype=gnd.attr["Tparams"].type, seg_dtype=DT_INT64,
                   removable=m.removable + [gnd.name, where.name, neq.name])


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
    from .dense_gather import _unwrapped

    x, wrapped = _unwrapped(view, g, table)
    return _canon(x) if wrapped else _canon(g)


def _is_count_plus_eps(view: GraphView, t: str, cast_name: str) -> bool:
    """t is AddV2(Sum(mask, axis -1 | 1, keep_dims), eps) with 0 < eps <= 2**-24 (deepctr's mean)."""
    add, _ = view.producer(t)
    if add is None or add.op not in ("AddV2", "Add"):
        return False
    for a, b in ((0, 1), (1, 0)):
        cnt, _ = view.input(add, a)
        eps_node, _ = view.skip_identity(*view.input(add, b))
        eps = view.const_value(eps_node)
        if cnt is not None and cnt.op == "Sum" and cnt.attr["keep_dims"].b and _canon(cnt.input[0]) == cast_name \
                and (view.const_equals(cnt.input[1], -1) or view.const_equals(cnt.input[1], 1)) \
                and eps is not None and np.ndim(eps) == 0 and 0 < float(eps) <= _EPS_MAX:
            return True
    return False


def _is_count_no_nan(view: GraphView, t: str, cast_name: str) -> bool:
    """t is ExpandDims(Sum(mask, axis 1), -1) (NVIDIA's row_lengths)."""
    den, _ = view.producer(t)
    cnt, _ = view.input(den, 0) if den is not None and den.op == "ExpandDims" else (None, 0)
    return cnt is not None and cnt.op == "Sum" and not cnt.attr["keep_dims"].b and _canon(cnt.input[0]) == cast_name \
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

    from .sparse_lookup import _const_node

    minus_one = _const_node(f"{name}/padding", np.array(-1, np.int32 if id_dtype == 3 else np.int64))
    sel = node_def_pb2.NodeDef(name=name, op="SelectV2", input=[cond, ids, minus_one.name])
    sel.attr["T"].type = id_dtype
    return [minus_one, sel]


def match_masked_pooling(view: GraphView, node, exclude: set, report):
    """A Lookup (dense id matrix form) for a ``Sum`` over axis 1 of a masked
    row gather, widened to the division of a mean by the mask's count; None
    when node is not one (a reason is reported when the gather and the mask
    are there but a checked detail differs)."""
    from .sparse_lookup import Lookup

    if node.op != "Sum" or node.name in exclude or node.attr["keep_dims"].b:
        return None
    if not (view.const_equals(node.input[1], 1) or view.const_equals(node.input[1], -2)):
        return None
    mul, _ = view.input(node, 0)
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
    if gather is None or mask is None:
        return None
    found = view.row_gather(gather)
    if found is None or isinstance(found, str):
        return None
    table_node, chain, gathered, id_dtype = found
    valid, cast, mask_nodes = mask
    x = _canon(valid.input[0]) if valid.op != "Less" else _canon(gathered)

    def leave(reason):
        report.left_alone.append({"node": node.name, "idiom": "masked pooling", "reason": reason})

    table = view.table_value(table_node)
    if table is None or table.ndim != 2 or table.dtype != np.float32:
        return None
    report.found += 1
    if not np.isfinite(table).all():
        return leave("the table has values that are not finite: masked-out rows (0 * row) are not 0 in TensorFlow")
    removable = chain + [gather.name, mul.name, table_node.name] + mask_nodes
    extra = []
    if valid.op == "GreaterEqual":        # NVIDIA: padding is -1, the ids read in place
        clip, _ = view.producer(gathered)
        if _canon(gathered) == x:
            pass
        elif clip is not None and clip.op == "Maximum" and _canon(clip.input[0]) == x \
                and view.const_equals(clip.input[1], 0):
            removable.append(clip.name)   # padding reads row 0, then masked out
        else:
            return leave("the gather reads other ids than the mask tests")
        matrix = dense_matrix(view, x)
        if matrix is None:
            return leave("the ids are not a rank-2 input or a column slice of one")
        ids, column, width = matrix
    elif valid.op == "Less":              # deepctr's length input: position j < len[r] counts
        width = _sequence_mask_width(view, valid)
        if width is None or not _rank2(view, x) or _static_width(view, x) != width:
            return leave("the length mask is not tf.sequence_mask(lengths [batch, 1], maxlen) over the ids' columns")
        squeeze = _squeeze_node(f"{node.name}/tiemb_valid", valid.name)
        extra = [squeeze] + _select_node(f"{node.name}/tiemb_ids", squeeze.name, gathered, id_dtype)
        ids, column, width = extra[-1].name, -1, 0
    else:                                 # Keras mask_zero: padding is 0, a valid row of the table
        if _keras_wrapped(view, gathered, table) != x:
            return leave("the gather reads other ids than the mask tests")
        if not _rank2(view, x):
            return leave("the ids are not a rank-2 input or a column slice of one")
        # The op's padding is ids < 0: the slot reads SelectV2(ids != 0, gathered ids, -1).
        extra = _select_node(f"{node.name}/tiemb_ids", valid.name, gathered, id_dtype)
        ids, column, width = extra[-1].name, -1, 0
    output, combiner = node, "sum"
    users = view.data_consumers(node.name)
    divs = [u for u, i in users if u.op in ("DivNoNan", "RealDiv", "Div") and i == 0]
    if len(users) == 1 and len(divs) == 1:
        div = divs[0]
        cast_name = tensor_name(cast.name, 0) if cast is not None else None
        if (div.op == "DivNoNan" and _is_count_no_nan(view, div.input[1], cast_name)) or \
                (div.op != "DivNoNan" and _is_count_plus_eps(view, div.input[1], cast_name)):
            output, combiner = div, "mean"
            removable.append(node.name)
        elif valid.op == "Less":
            leave("the mean divides by the length input (+ eps), not by the count of positions it masks (they "
                  "differ for a length above maxlen or below 0): the sum is fused, the division stays a "
                  "TensorFlow op")
        elif div.op == "DivNoNan":
            leave("the masked sum is divided by something other than the mask's count: the sum is fused, "
                  "the division stays a TensorFlow op")
        else:
            leave("the masked sum is divided with a plain division by something other than the mask's count "
                  "plus an epsilon below 2**-24 (a count alone gives NaN for rows without ids, the op zeros): "
                  "the sum is fused, the division stays a TensorFlow op")
    return Lookup(output=output.name, combiner=combiner, table_node=table_node.name, table=table, ids=ids,
                  segment_ids="", id_dtype=id_dtype, seg_dtype=DT_INT64, removable=removable, mode="safe",
                  id_column=column, id_width=width, extra_nodes=extra)


def fuse_pooled(view: GraphView, graph_def, matches: list, inside: set, report) -> list:
    """The rewriter's hook: widens safe lookups over a converted dense id
    matrix into the dense form, and adds the masked poolings; marks their
    nodes in ``inside`` so that the row-gather pass leaves them alone."""
    matches = [match_dense_to_sparse(view, m, report) or m for m in matches]
    for node in graph_def.node:
        m = match_masked_pooling(view, node, inside, report)
        if m is not None:
            matches.append(m)
            inside.update(m.removable)
    return matches
