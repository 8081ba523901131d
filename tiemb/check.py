"""``tiemb check MODEL``: a load-time health check of an optimized model's
table store (presence, sizes and CRC32C checksums of every file)."""

from __future__ import annotations

import os
from typing import List, Tuple

from .store import is_store


def store_of(model: str) -> str:
    """The table store of ``model``: a SavedModel directory (its ``assets/``),
    a frozen graph ``.pb`` (``<file>.store/``), or a store directory itself.
    Raises ValueError naming the path when there is none."""
    model = os.fspath(model)
    if os.path.isdir(model) and is_store(model):
        return model
    if os.path.isdir(model):
        if not os.path.exists(os.path.join(model, "saved_model.pb")):
            raise ValueError(f"{model}: not a SavedModel (no saved_model.pb) and not a table store (no store.json)")
        return os.path.join(model, "assets")
    if model.endswith(".pb"):
        if not os.path.isfile(model):
            raise ValueError(f"{model}: no such file")
        return model + ".store"
    raise ValueError(f"{model}: no such SavedModel directory, .pb file or table store")


def check_model(model: str) -> Tuple[str, List[str]]:
    """(store directory, problems) for ``model`` (see :func:`store_of`):
    every problem one line naming the file; no problems when the store is
    sound. Reads every byte of every table file."""
    from . import _C

    store = store_of(model)
    if not os.path.isdir(store):
        return store, [f"{store}: the table store is missing"]
    return store, list(_C.check_store(store))
