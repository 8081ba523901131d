"""The TiembLookup NodeDef that serves a group of matched lookups, one slot each."""

from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np

from .graph import attr_values, const_node
from .lookup import Lookup

DT_FLOAT, DT_HALF = 1, 19


def shared_constants(prefix: str, store_dir: Optional[str], used_inputs: set) -> list:
    """The Const NodeDefs the ops read (the store path, the placeholders of a
    slot without weights, row count or segment ids), those in ``used_inputs``."""
    constants = {f"{prefix}/store": np.array(os.path.abspath(store_dir).encode() if store_dir else b"", dtype=object),
                 f"{prefix}/no_weights": np.zeros([0], np.float32),
                 f"{prefix}/no_rows": np.array(-1, np.int64),
                 f"{prefix}/no_segments": np.zeros([0], np.int64)}
    return [const_node(name, value) for name, value in constants.items() if name in used_inputs]


def lookup_op(name: str, prefix: str, group: List[Lookup], files: Dict[str, str], features: List[int]):
    """The TiembLookup NodeDef serving ``group`` and the Casts of its float16 weights.

    Args:
        name: the op's node name.
        prefix: name prefix of the shared constants (``shared_constants``).
        group: the lookups, one slot each, in slot order.
        files: table node name -> the table's file name in the store.
        features: per slot its feature index (features.number_features).
    """
    from tensorflow.core.framework import node_def_pb2

    op = node_def_pb2.NodeDef(name=name, op="TiembLookup")
    op.input.append(f"{prefix}/store")
    op.input.extend(m.ids for m in group)
    op.input.extend(m.segment_ids or f"{prefix}/no_segments" for m in group)
    casts = _weight_casts(name, group)
    cast_of = {c.input[0]: c.name for c in casts}
    op.input.extend(cast_of.get(m.weights, m.weights) if m.weights else f"{prefix}/no_weights" for m in group)
    op.input.extend(m.num_rows or f"{prefix}/no_rows" for m in group)
    for key, val in _slot_attrs(group, files, features).items():
        op.attr[key].CopyFrom(val)
    return op, casts


def _weight_casts(name: str, group: List[Lookup]) -> list:
    """Cast(float16 -> float32) of the weights of slots that read float16 weights."""
    from tensorflow.core.framework import node_def_pb2

    casts = []
    for s, m in enumerate(group):
        if m.part.half_weights:
            cast = node_def_pb2.NodeDef(name=f"{name}/weights_{s}", op="Cast", input=[m.weights])
            cast.attr["SrcT"].type, cast.attr["DstT"].type = DT_HALF, DT_FLOAT
            casts.append(cast)
    return casts


def _slot_attrs(group: List[Lookup], files: Dict[str, str], features: List[int]) -> dict:
    """The op's attributes: one list entry per slot."""
    def out_type(m):
        half = m.table.dtype == np.float16 and (m.weights is None or m.part.half_output)
        return DT_HALF if half else DT_FLOAT

    widths = [m.part.id_width for m in group]
    return attr_values(N=len(group), Tids=("types", [m.id_dtype for m in group]),
                       Tsegs=("types", [m.seg_dtype for m in group]), tables=[files[m.table_node] for m in group],
                       dims=[int(m.table.shape[1]) for m in group], combiners=[m.combiner for m in group],
                       modes=[m.mode for m in group], default_ids=[m.part.default_id for m in group],
                       weighted=[m.weights is not None for m in group],
                       id_columns=[m.id_column for m in group],
                       wrap_negative=[m.part.wrap_negative for m in group],
                       features=list(features),
                       **({"id_widths": widths} if any(w >= 0 for w in widths) else {}),
                       out_types=("types", [out_type(m) for m in group]))
