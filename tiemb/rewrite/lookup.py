"""What a fusion pass found: one ``Lookup`` per matched subgraph, and the
rewrite's report.

A Lookup holds what every slot of the fused op has (its output, table, ids,
segment ids, weights, row count, combiner) and, in ``part``, the facts only
one idiom has. A part's class attributes are the op's defaults for every
per-slot attribute, so the op builder reads any part the same way and a new
idiom adds a part class here, not fields to Lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np


class Part:
    """Idiom-specific facts of a slot; the class attributes are the defaults."""

    idiom = "embedding_lookup_sparse"   # the report's name for the idiom
    mode = "plain"          # TiembLookup's row mode: plain (max segment id + 1 rows), safe (given rows), gather
    default_id = -1         # safe mode: the row of empty samples (-1: zeros)
    wrap_negative = False   # gather mode: Keras-style negative ids (rows + id)
    id_width = -1           # safe mode over a padded dense id matrix: its width from id_column
                            # (0: the whole last dimension); -1: not that form
    half_weights = False    # the weights are float16: the op reads them through a Cast to float32
    half_output = False     # the output is the float16 Cast of the float32 result


@dataclass(frozen=True)
class SparsePart(Part):
    """tf.nn.embedding_lookup_sparse (fusion_sparse.py, fusion_weighted.py)."""

    half_output: bool = False


@dataclass(frozen=True)
class SafePart(Part):
    """tf.nn.safe_embedding_lookup_sparse and feature columns (fusion_safe.py)."""

    idiom = "safe_embedding_lookup_sparse"
    mode = "safe"
    default_id: int = -1
    half_weights: bool = False
    half_output: bool = False


@dataclass(frozen=True)
class PooledPart(SafePart):
    """A padded dense id matrix pooled per row (fusion_dense_to_sparse.py, fusion_masked_pooling.py)."""

    idiom = "pooled id matrix"
    id_width: int = 0


@dataclass(frozen=True)
class GatherPart(Part):
    """A row gather from a table: Keras Embedding, tf.gather (fusion_gather.py)."""

    idiom = "gather"
    mode = "gather"
    wrap_negative: bool = False


@dataclass
class Lookup:
    """One matched lookup: what the fused op's slot reads and what it replaces."""

    output: str        # the node whose output the op replaces
    combiner: str      # sum, mean, sqrtn
    table_node: str
    table: np.ndarray
    ids: str           # tensor names
    segment_ids: str   # "" where the op needs none
    id_dtype: int      # DataType enum of ids
    seg_dtype: int
    part: Part = field(default_factory=SparsePart)
    removable: List[str] = field(default_factory=list)   # nodes the match replaces, removed once unused
    weights: Optional[str] = None    # float32 (or float16, see part.half_weights) tensor of per-id weights
    num_rows: Optional[str] = None   # safe mode: the dense_shape (or row count) tensor
    id_column: int = -1              # ids is a matrix and the slot reads this column of it
    extra_nodes: list = field(default_factory=list)   # NodeDefs the slot's inputs need (added by the pass)

    @property
    def mode(self) -> str:
        return self.part.mode


@dataclass
class RewriteReport:
    found: int = 0
    replaced: int = 0
    left_alone: List[dict] = field(default_factory=list)   # {"node", "idiom", "reason"}
    ops: List[dict] = field(default_factory=list)          # {"name", "slots"}
    features: int = 0    # most features (distinct id inputs) one op reads: what tiemb/slot_num must allow
    note: str = ""
    dense: dict = field(default_factory=dict)              # the dense backend chosen (saved_model.py)
    # Per replaced lookup: {"output", "idiom", "mode", "combiner", "table", "rows", "dim", "dtype", "ids",
    # "id_column", "weighted"}.
    lookups: List[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"found": self.found, "replaced": self.replaced, "left_alone": self.left_alone, "ops": self.ops,
                "note": self.note, "dense": self.dense, "lookups": self.lookups, "features": self.features}
