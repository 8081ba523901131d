"""Step 3: what the rewriter finds in the model, and the engine sizes
(``tiemb/max_batch_size``, ``slot_num``, ``max_nnz``) it needs on the test
data (see :mod:`tiemb.sizes`)."""

from __future__ import annotations

from typing import Dict

from ..shapes import InputShape
from .load import Model, tensor_values

SIZE_MEANING = {"tiemb/max_batch_size": "samples per call (a sparse input: dense_shape[0], never its number of ids)",
                "tiemb/slot_num": "features (distinct id inputs) one fused op serves; tables looked up with the same "
                                  "ids count once",
                "tiemb/max_nnz": "ids per sample per feature (a dense id matrix: its width)"}


def analyse(model: Model):
    """(rewritten GraphDef, RewriteReport): the rewrite the model would get,
    in memory (no store written), for the sizes, the generated data and the
    report; the rewriter's graph holds every fused op's inputs."""
    from ..rewrite.sparse_lookup import rewrite_sparse_lookups

    return rewrite_sparse_lookups(model.graph_def, None, max_batch_size=1, max_nnz=1, resources=model.resources)


def engine_sizes(model: Model, rewritten, found, batches, given: Dict[str, object], specs: Dict[str, InputShape]):
    """tiemb/max_batch_size, slot_num and max_nnz: given ones checked, missing
    ones inferred, from the fused ops' own inputs in ``rewritten`` (the
    rewriter's graph) on the test data (see tiemb.sizes). ``given``: the
    settings' sizes (None: to infer). Returns (sizes, which were inferred)."""
    from .. import sizes as engine

    inputs = model.input_of()
    lookups = found.lookups
    for lk in lookups:          # name features after the model's inputs, not its placeholders
        node, column = lk["feature_key"]
        if node in inputs:
            lk["feature"] = inputs[node] if column is None else f"{inputs[node]}[:, {column}]"
    values = tensor_values(model, engine.lookup_tensors(lookups), batches, rewritten) if lookups else \
        [{} for _ in batches]
    widths, declared = [], 0
    for b, batch in enumerate(batches):
        width = {}
        for lk in lookups:
            node, column = lk["feature_key"]
            feed = batch.get(inputs.get(node, ""))
            if feed is None:
                continue
            if column is None and feed.ndim == 2:
                width[lk["feature"]] = feed.shape[1]
            # A dense id input's leading dimension is its batch: input_shapes may declare a larger one.
            spec = specs.get(inputs[node])
            if feed.ndim and spec is not None and spec.max_shape and \
                    engine.sample_counts(lk, values[b])[0] == feed.shape[0]:
                declared = max(declared, spec.max_shape[0])
        widths.append(width)
    need = engine.measure(lookups, values, widths)
    need["tiemb/slot_num"] = engine.features_per_op(lookups, found.ops)
    return engine.engine_sizes({k: given[k] for k in engine.KEYS}, need, extra_batch=declared)
