"""Rewriting a frozen graph (.pb): the table store is written beside it, as
``<file>.store/``, and :func:`load_frozen_graph` finds it there wherever the
pair was moved."""

from __future__ import annotations

import os
import shutil


def store_path(pb_path: str) -> str:
    """The table store that belongs to a rewritten frozen graph."""
    return pb_path + ".store"


def read_graph_def(path: str):
    """The GraphDef in file ``path``; ValueError naming the file when it cannot be read."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    try:
        with open(path, "rb") as f:
            graph_def.ParseFromString(f.read())
    except (OSError, ValueError, DecodeError) as e:
        raise ValueError(f"cannot read a frozen GraphDef from {path}: {e}") from None
    return graph_def


def rewrite_frozen_graph(src: str, dst: str, *, max_batch_size: int, max_nnz: int, overwrite: bool = False,
                         level: int = 0, backend: str = "tensorflow", store_files=None, device: str = "cpu",
                         slot_num: int = None):
    """Reads frozen GraphDef ``src``, fuses its lookups, writes ``dst`` and its
    store ``dst.store/``; ``level`` and ``backend`` as for
    :func:`rewrite_saved_model` (unverified here: a GraphDef has no signature
    to feed). Returns the RewriteReport; raises ValueError for an
    unreadable ``src`` or an existing ``dst`` without ``overwrite``. Nothing is
    left at ``dst`` when it fails."""
    from .. import _files, backends
    from .saved_model import write_store_files
    from .sparse_lookup import rewrite_sparse_lookups

    if os.path.exists(dst) and not overwrite:
        raise ValueError(f"{dst} exists (pass overwrite=True to replace it)")
    graph_def = read_graph_def(src)
    tmp_store, tmp_pb = store_path(dst) + ".tmp", dst + ".tmp"
    shutil.rmtree(tmp_store, ignore_errors=True)
    try:
        new_gd, report = rewrite_sparse_lookups(graph_def, tmp_store, max_batch_size=max_batch_size,
                                                max_nnz=max_nnz, half_tables=level >= 1, device=device,
                                                slot_num=slot_num)
        new_gd, notes = backends.apply(backend, new_gd, level)
        report.dense = {"dense_backend": backend, "notes": notes, "level": level, "verified": False}
        if report.replaced:
            write_store_files(tmp_store, store_files)
        with open(tmp_pb, "wb") as f:
            f.write(new_gd.SerializeToString())
        # An existing store is swapped out atomically (then removed with
        # tmp_store below), then the graph is renamed over: never no store.
        if os.path.isdir(tmp_store):
            _files.replace(tmp_store, store_path(dst))
        else:
            shutil.rmtree(store_path(dst), ignore_errors=True)
        os.replace(tmp_pb, dst)
        return report
    finally:
        shutil.rmtree(tmp_store, ignore_errors=True)
        if os.path.exists(tmp_pb):
            os.remove(tmp_pb)


def load_frozen_graph(path: str, inputs, outputs):
    """A callable running frozen graph ``path`` from tensors ``inputs`` to
    ``outputs`` (tensor names), with its TiembLookup ops reading the store
    beside the file (see :func:`tiemb.runner.graph_function`)."""
    from ..runner import graph_function

    return graph_function(read_graph_def(path), inputs, outputs, os.path.abspath(store_path(path)))
