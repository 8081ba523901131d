"""TensorFlow integration: the TiembLookup op and the table store it reads.

The op library (``_tiemb_tf_ops.so``) is built by ``pip install .`` where
TensorFlow is importable. ``import tiemb`` registers it when TensorFlow is
already imported (as in serving code: ``import tensorflow as tf; import tiemb``);
otherwise call :func:`load` (or use :func:`lookup`, which loads it).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from . import store as _store

_LIBRARY = os.path.join(os.path.dirname(__file__), "_tiemb_tf_ops.so")
_module = None


def available() -> bool:
    """True when this build has the op library."""
    return os.path.exists(_LIBRARY)


def load():
    """Registers TiembLookup with TensorFlow (once per process); returns the op module."""
    global _module
    if _module is None:
        if not available():
            raise RuntimeError("this tiemb build has no TensorFlow op library: TensorFlow was not importable "
                               "when tiemb was built; install tensorflow first, then reinstall tiemb")
        import tensorflow as tf

        _module = tf.load_op_library(_LIBRARY)
    return _module


def store_engines() -> list:
    """The core's registry of store engines as the op library sees it: a list
    of dicts with ``store``, ``device`` (-1 = CPU), ``content_id``,
    ``address`` and ``users``, as :func:`tiemb._C.live_store_engines` gives
    them from the Python side (one core per process: the same list)."""
    import tensorflow as tf  # noqa: F401  (the op runs eagerly)

    out = []
    for line in load().tiemb_store_engines().numpy().tolist():
        store, device, content_id, address, users = line.decode().split("\t")
        out.append({"store": store, "device": int(device), "content_id": content_id, "address": int(address),
                    "users": int(users)})
    return out


# The store's writer lives in tiemb.store; these names stay for callers of
# the old location.
write_store = _store.write_store
resize_store = _store.resize_store
check_store = _store.check_store


def lookup(store, ids: Sequence, segment_ids: Sequence, *, tables: Sequence[str], dims: Sequence[int],
           combiners: Sequence[str], modes: Sequence[str], weights: Optional[Sequence] = None,
           num_rows: Optional[Sequence] = None, default_ids: Optional[Sequence[int]] = None,
           out_types: Optional[Sequence] = None, id_columns: Optional[Sequence[int]] = None,
           wrap_negative: Optional[Sequence[bool]] = None, features: Optional[Sequence[int]] = None,
           id_widths: Optional[Sequence[int]] = None, slot_outputs: Optional[Sequence[int]] = None,
           slot_offsets: Optional[Sequence[int]] = None):
    """Builds one TiembLookup op over N slots; returns N tensors [rows, dim]
    (or, with ``slot_outputs``, one tensor per output).

    Args:
        store: the store directory (string or string tensor).
        ids, segment_ids: per slot 1-D int tensors (all ids one dtype; all
            segment ids one dtype), as ``sp_ids.values`` and ``sp_ids.indices[:, 0]``.
        tables, dims, combiners, modes: per slot: table file name in the store,
            its dimension, ``sum|mean|sqrtn``, ``plain|safe``.
        weights: per slot a float32 tensor or None (unweighted).
        num_rows: per slot the row count of safe slots (``dense_shape[0]``); plain slots ignore it.
        default_ids: per slot the safe-mode default row, or -1.
        out_types: per slot (per output with ``slot_outputs``) tf.float32
            (default) or tf.float16.
        id_columns: per slot -1 (ids as given) or c: the slot's ids are column
            c of its 2-D ids tensor, read in place (one output row per row).
        wrap_negative: per slot, gather mode: a negative id i reads row
            rows + i, as Keras ``Embedding`` does.
        features: per slot the feature (distinct id input) it reads: slots
            with the same value share their ids and count once against the
            store's ``slot_num``; None: every slot a feature of its own.
        id_widths: per slot -1 (not used) or, for a safe slot, its ids are a
            padded dense id matrix and output row r pools the ids >= 0 of
            matrix row r (no segment ids): 0 for the whole last dimension
            (from column c with ``id_columns``), w > 0 for the w columns from
            ``id_columns`` (or 0), read in place.
        slot_outputs, slot_offsets: fused outputs: per slot, the output it
            writes and its first column there; an output written by several
            slots is ``[rows, width]`` with their columns side by side (their
            concatenation along the last axis; every column written once, all
            its slots with the same row count). None: output s is slot s.
    """
    import tensorflow as tf

    op = load()
    n = len(ids)
    weighted = [w is not None for w in (weights or [None] * n)]
    w = [tf.zeros([0], tf.float32) if x is None else tf.convert_to_tensor(x, tf.float32)
         for x in (weights or [None] * n)]
    rows = [tf.constant(-1, tf.int64) if r is None else tf.cast(r, tf.int64) for r in (num_rows or [None] * n)]
    return op.tiemb_lookup(
        store=store, ids=list(ids), segment_ids=list(segment_ids), weights=w, num_rows=rows, tables=list(tables),
        dims=[int(d) for d in dims], combiners=list(combiners), modes=list(modes),
        default_ids=[-1 if d is None else int(d) for d in (default_ids or [-1] * n)], weighted=weighted,
        out_types=list(out_types or [tf.float32] * (max(slot_outputs) + 1 if slot_outputs else n)),
        id_columns=list(id_columns or [-1] * n), wrap_negative=list(wrap_negative or [False] * n),
        features=list(features or []), slot_outputs=[int(o) for o in slot_outputs or []],
        slot_offsets=[int(o) for o in slot_offsets or []],
        **({"id_widths": [int(x) for x in id_widths]} if id_widths is not None else {}))
