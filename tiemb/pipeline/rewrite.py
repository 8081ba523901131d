"""Step 4: the rewritten model, staged in the work directory, with its dense
backend chosen (:func:`tiemb.backends.choose`) on the test data."""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np

from ..settings import Settings
from .errors import OptimizeError
from .load import Model


def original_runner(model: Model):
    """``run(feeds) -> {output: array}`` for the original model."""
    from ..runner import feed_runner, signature_runner

    if model.kind == "saved_model":
        return signature_runner(model.signature.fn, model.outputs)
    return feed_runner(model.graph_def, model.inputs, model.placeholders(), model.outputs)


def stage(model: Model, work: str, settings: Settings, level: int, device: str,
          batches: List[Dict[str, np.ndarray]], original_run) -> Tuple[str, object]:
    """(staged path, RewriteReport): the optimized model written under
    ``work`` (a SavedModel directory, or a ``.pb`` with its ``.store/``), the
    settings' plain values written beside its tables."""
    from .. import tf_ops
    from ..rewrite import rewrite_saved_model

    tf_ops.load()
    store_files = {"tiemb_config.json": settings.to_json()}
    if model.kind == "saved_model":
        staged = os.path.join(work, "model")
        rewrite = rewrite_saved_model(model.path, staged, max_batch_size=settings.max_batch_size,
                                      max_nnz=settings.max_nnz, slot_num=settings.slot_num, level=level,
                                      device=device, test_batches=batches[:2], store_files=store_files,
                                      frozen=model.signature)
        return staged, rewrite
    return _stage_graph(model, work, settings, level, device, batches, original_run, store_files)


def _stage_graph(model: Model, work: str, settings: Settings, level: int, device: str, batches, original_run,
                 store_files) -> Tuple[str, object]:
    """A frozen graph or GraphDef: rewritten under TensorFlow's kernels (level
    1: bfloat16 matmuls first, float32 where they are beyond the tolerance)."""
    from .. import backends
    from ..rewrite import rewrite_frozen_graph
    from ..rewrite.frozen_graph import read_graph_def, store_path
    from ..runner import feed_runner
    from .verify import max_difference

    src = model.path
    if model.kind == "graphdef":
        src = os.path.join(work, "input.pb")
        with open(src, "wb") as f:
            f.write(model.graph_def.SerializeToString())
    staged = os.path.join(work, "model.pb")

    def build(name):
        return rewrite_frozen_graph(src, staged, max_batch_size=settings.max_batch_size, max_nnz=settings.max_nnz,
                                    slot_num=settings.slot_num, level=level, backend=name, overwrite=True,
                                    store_files=store_files, device=device)

    def evaluate(_report):
        run = feed_runner(read_graph_def(staged), model.inputs, model.placeholders(), model.outputs,
                          os.path.abspath(store_path(staged)))
        return max_difference(original_run, run, batches) + (0.0,)

    names = ("tensorflow", "tensorflow-fp32") if level else ("tensorflow",)
    try:
        _, rewrite, info = backends.choose(level, device, build, evaluate, names=names, first_within=True)
    except RuntimeError as e:
        raise OptimizeError(f"the optimized model's outputs differ beyond level {level}'s tolerance "
                            f"{backends.TOLERANCE[level]:g}; nothing was written ({e})") from None
    if info["dropped_backends"]:
        rewrite.dense["dropped_backends"] = info["dropped_backends"]
    return staged, rewrite
