"""Step 5: where the result goes, and moving it there atomically (an
existing model is swapped out and put back when the new one fails its check)."""

from __future__ import annotations

import os
import tempfile
from typing import List, Optional, Tuple

import numpy as np

from .. import _files
from .errors import OptimizeError
from .load import Model


def resolve_save_path(kind: str, save_path, overwrite: bool) -> Tuple[str, Optional[str]]:
    """(save path, note): ``save_path`` checked against the input's kind (a
    SavedModel directory or a ``.pb``), or a new temporary one (the note names
    it); an existing non-empty path needs ``overwrite``. Its parent is created."""
    note = None
    if save_path is None:
        base = tempfile.mkdtemp(prefix="tiemb-optimized-")
        save_path = os.path.join(base, "model" if kind == "saved_model" else "model.pb")
        note = f"no save_path: the optimized model was written to {save_path}"
    save_path = os.fspath(save_path)
    if kind == "saved_model" and save_path.endswith(".pb"):
        raise OptimizeError(f"save_path {save_path} is a .pb file but the input is a SavedModel: the output is a "
                            "SavedModel directory")
    if kind != "saved_model" and not save_path.endswith(".pb"):
        raise OptimizeError(f"save_path {save_path} must be a .pb file: the input is a frozen graph")
    if os.path.exists(save_path) and (os.path.isfile(save_path) or os.listdir(save_path)) and not overwrite:
        raise OptimizeError(f"save_path {save_path} exists and is not empty; pass overwrite=True (CLI: --overwrite)")
    os.makedirs(os.path.dirname(os.path.abspath(save_path)), exist_ok=True)
    return save_path, note


def into_place(kind: str, staged: str, save_path: str) -> List[tuple]:
    """Moves the staged model (and a ``.pb``'s store) to ``save_path``; what
    was there goes to the staged path (removed with the work directory).
    Returns the moves, for :func:`put_back`."""
    from ..rewrite.frozen_graph import store_path

    moved: List[tuple] = []     # (path now holding the old one or nothing, its place, how)
    try:
        if kind == "saved_model":
            moved.append((staged, save_path, _files.replace(staged, save_path)))
            return moved
        store = store_path(save_path)
        if os.path.isdir(store_path(staged)):
            moved.append((store_path(staged), store, _files.replace(store_path(staged), store)))
        elif os.path.lexists(store):
            os.rename(store, store_path(staged))      # the old store goes with the old graph
            moved.append((store_path(staged), store, "removed"))
        moved.append((staged, save_path, _files.replace(staged, save_path)))
        return moved
    except BaseException:
        put_back(moved)
        raise


def put_back(moved: List[tuple]) -> None:
    """Undoes :func:`into_place`: the previous contents return to their place
    (the new model goes back to the work directory, removed with it)."""
    for held, place, had_old in reversed(moved):
        if had_old == "removed":
            os.rename(held, place)
        elif had_old:
            _files.replace(held, place)
        elif os.path.lexists(place):
            os.rename(place, held)


def open_saved(model: Model, save_path: str):
    """(output model, its run function): the model now at ``save_path``, as
    optimize() returns it (a loaded SavedModel, or a GraphDef whose store
    constant names the store beside it)."""
    import tensorflow as tf

    from ..rewrite.frozen_graph import read_graph_def, store_path
    from ..runner import feed_runner, signature_runner

    if model.kind == "saved_model":
        output_model = tf.saved_model.load(save_path)
        return output_model, signature_runner(output_model.signatures["serving_default"], model.outputs)
    store = os.path.abspath(store_path(save_path))
    final_gd = read_graph_def(save_path)
    run = feed_runner(final_gd, model.inputs, model.placeholders(), model.outputs, store)
    return with_store(final_gd, store), run


def with_store(graph_def, store: str):
    """The GraphDef with its store constant pointing at ``store`` (a GraphDef
    object has no place for assets: its ops read this path)."""
    from tensorflow.python.framework import tensor_util

    for n in graph_def.node:
        if n.name == "tiemb/store" and n.op == "Const":
            n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.array(store.encode(), dtype=object)))
    return graph_def
