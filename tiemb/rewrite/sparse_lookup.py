"""The rewriter's entry point for a frozen GraphDef: ``rewrite_sparse_lookups``
runs the fusion passes through the driver (driver.py) and writes the table
store the rewritten graph reads.

Each idiom is one pass on the base classes of base.py:

=============================  ==========================================
idiom                          pass
=============================  ==========================================
embedding_lookup_sparse        fusion_sparse.py (fusion_weighted.py with weights)
safe_embedding_lookup_sparse   fusion_safe.py
feature column dense ids       fusion_dense_to_sparse.py
masked pooling of a gather     fusion_masked_pooling.py
row gather (Keras Embedding)   fusion_gather.py
concat / stack / sum of ops    fusion_outputs.py (on the spliced graph)
=============================  ==========================================
"""

from __future__ import annotations

from typing import Optional

from .driver import rewrite
from .lookup import Lookup, RewriteReport

__all__ = ["Lookup", "RewriteReport", "rewrite_sparse_lookups"]


def rewrite_sparse_lookups(graph_def, store_dir: Optional[str], *, max_batch_size: int, max_nnz: int, prefix: str = "tiemb",
                           half_tables: bool = False, resources=None, device: str = "cpu",
                           slot_num: Optional[int] = None, fuse_outputs: bool = True, pooled: bool = True):
    """Replaces the embedding lookups of a frozen GraphDef: every idiom a
    fusion pass recognises (the table in the module doc).

    All matched lookups become one TiembLookup op (one per dependency level
    where a lookup's ids need another's output); their tables are written to
    ``store_dir`` (a table store) and leave the graph. Returns
    ``(new_graph_def, RewriteReport)``; the input is not modified. A graph
    with nothing to replace comes back unchanged and no store is written.

    Args:
        store_dir: where the table store is written (None: nothing is
            written, for analysis such as ``tiemb inspect``); the op reads it from this
            path (a SavedModel export makes it an asset).
        max_batch_size, max_nnz: the engine's sizes (see EngineConfig): most
            samples per call, most ids per sample and slot.
        prefix: name prefix of the nodes the rewrite adds.
        slot_num: most features (distinct id inputs) one op serves, written
            to the store; None: the most any op of this graph reads
            (``report.lookups[k]["feature"]`` names each lookup's feature).
        half_tables: store float32 tables as float16 (optimization level 1:
            half the bytes; lookups still accumulate and output float32).
        resources: tables left as variables (too big to freeze): resource
            placeholder name -> numpy value; gathers from them are matched like
            gathers from constants.
        device: "cpu" pins the ops to the CPU kernel; "gpu" leaves them to
            TensorFlow's placement (the op's GPU kernel, on the GPU engine,
            which serves every slot form the CPU engine does).
        pooled: fuse padded dense id matrices (feature columns' dense-to-sparse
            conversion, masked pooling) into the op.
        fuse_outputs: where the model concatenates, stacks or sums lookup
            outputs right away, the op writes one output laid out as the
            result (fusion_outputs.py; listed in report.ops[i]["merged"]).
    """
    result = rewrite(graph_def, store_dir, max_batch_size=max_batch_size, max_nnz=max_nnz, prefix=prefix,
                     half_tables=half_tables, resources=resources, device=device, slot_num=slot_num,
                     fuse_outputs=fuse_outputs, pooled=pooled)
    if store_dir is not None and result.store is not None:
        from .. import store as table_store

        store = result.store
        table_store.write_store(store_dir, store.tables, max_batch_size=store.max_batch_size,
                                slot_num=store.slot_num, max_nnz=store.max_nnz)
    return result.graph_def, result.report
