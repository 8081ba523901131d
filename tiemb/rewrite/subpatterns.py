"""Small sub-patterns several fusion passes read: a usable table, Keras'
negative-id wrapping, a rank-2 id matrix read in place."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from .graph import GraphView


def valid_table(view: GraphView, node, dtypes=(np.float32, np.float16)) -> Optional[np.ndarray]:
    """The value of the table ``node`` is when it is 2-D of one of ``dtypes``, else None."""
    table = view.table_value(node)
    if table is None or table.ndim != 2 or table.dtype not in dtypes:
        return None
    return table


def static_int(view: GraphView, tensor: str):
    """The value of a small int expression the graph computes from constants
    and table shapes (Const, Cast, Identity, Shape of a table, StridedSlice of
    those), or None."""
    node, _ = view.producer(tensor)
    if node is None:
        return None
    if node.op == "Const":
        return view.const_value(node)
    if node.op in ("Cast", "Identity"):
        return static_int(view, node.input[0])
    if node.op == "Shape":
        table = view.table_value(view.producer(node.input[0])[0])
        return None if table is None else np.array(table.shape, np.int64)
    if node.op == "StridedSlice" and node.attr["shrink_axis_mask"].i == 1 and node.attr["ellipsis_mask"].i == 0 \
            and node.attr["new_axis_mask"].i == 0:
        x, begin = static_int(view, node.input[0]), static_int(view, node.input[1])
        if x is not None and begin is not None and np.ndim(x) == 1 and np.shape(begin) == (1,) \
                and view.const_equals(node.input[3], [1]):
            return x[int(begin[0])]
    return None


def keras_unwrapped(view: GraphView, ids: str, table) -> Tuple[str, bool]:
    """Keras Embedding wraps negative ids Python-style first::

        ids ─► SelectV2(Less(ids, 0), AddV2(ids, rows), ids)

    rows being the table's row count (a constant or Shape(table)[0]).
    Returns (ids before it, True) for that exact pattern, else (ids, False)."""
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
    value = static_int(view, other) if other is not None else None
    if value is None or np.ndim(value) != 0 or int(value) != rows:
        return ids, False
    return x, True


def rank2_placeholder(view: GraphView, t: str) -> bool:
    """t is (an Identity of) a model input of static rank 2."""
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
    if rank2_placeholder(view, t):
        return view.through_identity(t), -1, 0
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
    if not rank2_placeholder(view, s.input[0]):
        return None
    return view.through_identity(s.input[0]), b, 0 if open_end else e - b
