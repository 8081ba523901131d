"""The one graph runner: a GraphDef run from some of its tensors to others,
with its TiembLookup ops reading a given table store.

Every part of tiemb that runs a graph (optimize's verification and timing,
the size and traffic probes, :func:`tiemb.rewrite.load_frozen_graph`, the
benchmark harness) goes through :func:`graph_function`.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import numpy as np

STORE_INPUT = "tiemb/store:0"     # the placeholder every rewritten graph's TiembLookup ops read the store path from


def tensor_name(name: str) -> str:
    """``name`` as a tensor name: ``x`` -> ``x:0``; ``x:1`` stays."""
    return name if ":" in name else f"{name}:0"


def graph_function(graph_def, feeds: Sequence[str], fetches: Sequence[str], store: Optional[str] = None):
    """A concrete function running ``graph_def``.

    Args:
        graph_def: the GraphDef.
        feeds: tensor names (``x`` means ``x:0``) the function takes, in order,
            as positional tensors.
        fetches: tensor names it returns, as a list in that order.
        store: the table store directory fed to ``tiemb/store`` where the
            graph has that placeholder (None: it is left unfed, so no
            TiembLookup op may lie between ``feeds`` and ``fetches``).

    Only the ops ``fetches`` need run (the function is pruned to them)."""
    import tensorflow as tf

    if store is not None and not any(n.name == STORE_INPUT[:-2] for n in graph_def.node):
        store = None
    if store is not None:
        from . import tf_ops

        tf_ops.load()

    def imported():
        input_map = {STORE_INPUT: tf.constant(store)} if store is not None else None
        tf.compat.v1.import_graph_def(graph_def, input_map=input_map, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    g = wrapped.graph
    return wrapped.prune([g.as_graph_element(tensor_name(n)) for n in feeds],
                         [g.as_graph_element(tensor_name(n)) for n in fetches])


def feed_runner(graph_def, inputs: Sequence[str], placeholders: Sequence[str], outputs: Sequence[str],
                store: Optional[str] = None) -> Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]:
    """``run(feeds) -> {output: array}``: ``graph_def`` fed by input name.

    Args:
        inputs: the model's input names (the keys of ``feeds``).
        placeholders: the tensor each input feeds, in the same order.
        outputs: tensor names to return (the keys of the result).
        store: as for :func:`graph_function`."""
    import tensorflow as tf

    fn = graph_function(graph_def, placeholders, outputs, store)

    def run(feeds):
        return {o: v.numpy() for o, v in zip(outputs, fn(*[tf.constant(feeds[n]) for n in inputs]))}
    return run


def signature_runner(fn, outputs: Sequence[str]) -> Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]:
    """``run(feeds) -> {output: array}`` for a SavedModel signature ``fn``
    (called with keyword tensors), keeping ``outputs``."""
    import tensorflow as tf

    def run(feeds):
        result = fn(**{k: tf.constant(v) for k, v in feeds.items()})
        return {o: result[o].numpy() for o in outputs}
    return run
