"""Which feature (distinct id input) each fused lookup reads.

``tiemb/slot_num`` counts features, not lookups: a DeepFM looks every
feature's ids up twice (its linear part and its embedding part), feature
columns even convert the same input column to a sparse tensor once per
column that reads it, and both lookups are still one slot of the model's
input. So a feature is named by where its ids come from:

* a column read in place (Keras ``Embedding(cat[:, i])``): ``(cat, i)``;
* otherwise the one model input the ids are computed from, through a column
  slice (``cat[:, i:i+1]``, as feature columns read it) when there is one:
  ``(cat, i)`` or ``(genres, None)``;
* ids computed from several inputs (or none): the ids tensor itself.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from .graph import GraphView, split_input

PLACEHOLDERS = ("Placeholder", "PlaceholderWithDefault")


def feature_of(view: GraphView, ids: str, id_column: int, extra: Optional[Dict[str, object]] = None) \
        -> Tuple[tuple, str]:
    """(key, display name) of the feature a lookup with these ids reads;
    ``extra``: nodes the rewrite adds (a pooled slot's masked ids), by name."""
    extra = extra or {}
    if id_column >= 0:
        src, _ = view.skip_identity(*view.producer(ids))
        base = src.name if src is not None else split_input(ids)[0]
        return (base, id_column), f"{base}[:, {id_column}]"
    found, columns = set(), set()
    stack, seen = [split_input(ids)[0]], set()
    while stack:
        name = stack.pop()
        node = view.nodes.get(name) or extra.get(name)
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op in PLACEHOLDERS:
            found.add(node.name)
            continue
        column = _column_slice(view, node)
        if column is not None:
            columns.add(column)
        stack.extend(split_input(i)[0] for i in node.input if not i.startswith("^"))
    if len(found) == 1 and len(columns) <= 1:
        (name,) = found
        column = next(iter(columns), None)
        return (name, column), name if column is None else f"{name}[:, {column}]"
    return (ids, None), ids


def _column_slice(view: GraphView, node) -> Optional[int]:
    """c for ``x[:, c]`` or ``x[:, c:c+1]`` taken straight off a rank-2 model input, else None."""
    if node.op != "StridedSlice":
        return None
    src, _ = view.skip_identity(*view.input(node, 0))
    begin = view.const_value(view.producer(node.input[1])[0])
    if src is None or src.op not in PLACEHOLDERS or begin is None or np.shape(begin) != (2,):
        return None
    return int(begin[1])


def number_features(keys: List[tuple]) -> Tuple[List[int], int]:
    """Per slot a feature index (first appearance order), and the count."""
    index: Dict[tuple, int] = {}
    out = [index.setdefault(k, len(index)) for k in keys]
    return out, len(index)
