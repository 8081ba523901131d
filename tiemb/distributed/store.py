"""A table store's tables into the cluster, and what the store records
about them: store.json's ``distributed`` object (namespace, model, settings,
per table its content version and host tier), written by
:func:`tiemb.store.write_distributed` and read by the C++ store reader
(csrc/core/table_store.h, ``store_distributed``). A published store keeps
only each table's host tier on disk (``<table>.host`` rows and
``<table>.host.i64`` ids, hottest first); the other rows live only in the
cluster.
"""

from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np

from .. import _C
from .. import store as table_store
from .publish import DistributedError, publish_table, read_blocks, resolve_layout
from .serving import host_ids, stored_host_ids
from .settings import DEFAULT_BLOCK_ROWS, DistributedSettings, connect


def read_store_table(store: str, name: str) -> np.ndarray:
    """A whole table of a store as a (memory-mapped) array."""
    path = os.path.join(store, name)
    rows, dim, dtype, _ = _C.read_table_rows(path, [])
    return np.memmap(path, dtype=str(dtype), mode="r", offset=64, shape=(int(rows), int(dim)))


def default_model_name(store: str) -> str:
    """The model part of the keys when none is given: the model directory's
    name (a SavedModel's assets/ store) or the store directory's."""
    path = os.path.abspath(store).rstrip("/")
    if os.path.basename(path) == "assets":
        path = os.path.dirname(path)
    name = os.path.basename(path)
    for suffix in (".store", ".pb"):
        if name.endswith(suffix):
            name = name[:-len(suffix)]
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name) or "model"


def published_table(client, namespace: str, model: str, name: str, version: str) -> np.ndarray:
    """A whole table as the cluster holds ``version`` of it (what a published
    store no longer carries on disk); DistributedError naming the table and
    version when it is not there."""
    try:
        layout = resolve_layout(client, namespace, model, name, version)
    except DistributedError as e:
        raise DistributedError(f"distributed table {name!r}: the store's rows live only in the cluster, and "
                               f"version {version} is not there (namespace {namespace!r}, model {model!r}): {e}")
    blocks = read_blocks(client, layout, range(-(-layout["rows"] // layout["block_rows"])))
    return np.concatenate([blocks[k] for k in sorted(blocks)])


def publish_store(store: str, settings: DistributedSettings, *, model: Optional[str] = None,
                  block_rows: int = DEFAULT_BLOCK_ROWS, cpu_cache_percentage: Optional[float] = None,
                  profile: Optional[Dict[str, np.ndarray]] = None, progress=None) -> dict:
    """Publishes every table of ``store`` and records it in the store
    (store.json's ``distributed``); the store then keeps only each table's
    host tier on disk.

    Args:
        store: a table store directory (as optimize() wrote it, or already
            published: its tables are then read back from the cluster
            ``settings`` reaches, at the recorded namespace, model and
            versions).
        settings: the cluster (:class:`DistributedSettings`).
        model: key part naming the model; default: the recorded one, else
            :func:`default_model_name`.
        block_rows: rows per cluster value.
        cpu_cache_percentage: share of each table's rows in the serving host
            tier (at least one row); default: the recorded one, else the
            store's tier setting.
        profile: per table name, ids seen in the test data (the host tier
            takes the most frequent first); None keeps a previous publish's
            host tier order, else the lowest ids.
        progress: called with (table, result) after each table.

    Returns ``{"namespace", "model", "cpu_cache_percentage", "tables": {name:
    {"version", "rows", "dim", "dtype", "block_rows", "host_rows",
    "written_values", "test_data_host_hit_rate" (with a profile)}}}``.
    """
    client = connect(settings)
    manifest = _C.read_store_manifest(store)
    recorded = manifest.get("distributed") or {}
    by_name = {t["name"]: t for t in recorded.get("tables", [])}
    if cpu_cache_percentage is None:
        cpu_cache_percentage = float(recorded.get("cpu_cache_percentage", manifest["tiers"]["cpu_cache_percentage"]))
    model = model or recorded.get("model") or default_model_name(store)
    out = {"namespace": settings.namespace, "model": model, "cpu_cache_percentage": cpu_cache_percentage,
           "tables": {}}
    where, tiers = {}, {}
    for name in manifest["tables"]:
        if name in by_name:  # its rows live only in the cluster now
            table = published_table(client, recorded["namespace"], recorded["model"], name, by_name[name]["version"])
        else:
            table = read_store_table(store, name)
        result = publish_table(client, settings.namespace, model, name, table, block_rows)
        seen = None if profile is None else profile.get(name)
        ids = host_ids(table.shape[0], cpu_cache_percentage, seen) if profile is not None else \
            _resized(stored_host_ids(store, name, recorded), table.shape[0], cpu_cache_percentage)
        if ids.size == 0:  # a table file holds at least one row
            ids = np.asarray(_C.hot_rows(table.shape[0], np.zeros(0, np.int64) if seen is None else seen, 1))
        tiers[name] = (ids, np.asarray(table[ids]))
        where[name] = {"version": result["version"], "block_rows": block_rows}
        t = {k: result[k] for k in ("version", "rows", "dim", "dtype", "written_values")}
        t.update(block_rows=block_rows, host_rows=int(ids.size))
        if seen is not None and len(seen):
            # Share of the test data's lookups (duplicates included) the host tier serves.
            t["test_data_host_hit_rate"] = float(np.isin(seen, ids).mean())
        out["tables"][name] = t
        if progress:
            progress(name, result)
    settings_doc = {"address": settings.address, "timeout_ms": settings.timeout_ms, "retries": settings.retries,
                    "refresh_seconds": settings.refresh_seconds}
    table_store.write_distributed(store, {"namespace": settings.namespace, "model": model,
                                          "cpu_cache_percentage": cpu_cache_percentage, "settings": settings_doc,
                                          "tables": where}, tiers)
    return out


def _resized(order: Optional[np.ndarray], rows: int, cpu_cache_percentage: float) -> np.ndarray:
    """A previous host tier's order cut or extended to the new share."""
    want = host_ids(rows, cpu_cache_percentage, None)
    if order is None:
        return want
    if order.size >= want.size:
        return order[:want.size]
    rest = np.setdiff1d(np.arange(rows, dtype=np.int64), order, assume_unique=False)
    return np.concatenate([order, rest[:want.size - order.size]])


def publish_for_optimize(save_path: str, params: dict, traffic=None) -> dict:
    """optimize()'s one call when tiemb/enable_distributed is set: publishes
    the table store of the optimized model at ``save_path`` (keys under the
    model's directory name) and returns the report's ``cache["distributed"]``.

    Args:
        save_path: the optimized SavedModel directory or ``.pb`` file.
        params: the resolved tiemb/* values (address, namespace, ...).
        traffic: None, or a callable returning {table: [id arrays]} seen in
            the test data: the host tier keeps the most frequent ids.
    """
    from ..check import store_of

    import re

    store = store_of(save_path)
    settings = DistributedSettings.from_params(params)
    profile = None
    if traffic is not None:
        profile = {}
        files = set(_C.read_store_manifest(store)["tables"])
        for name, arrays in traffic().items():
            arrays = [np.asarray(a, dtype=np.int64).ravel() for a in arrays]
            # Traffic is keyed by the graph's table node; the store by its file
            # name (tiemb/rewrite/sparse_lookup.py names the files so).
            file = name if name in files else re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".tiemb"
            if file not in files:
                raise ValueError(f"tiemb/enable_distributed: the test data's table {name!r} is not in the store "
                                 f"{store} (tables: {sorted(files)})")
            profile[file] = np.concatenate(arrays) if arrays else np.zeros(0, np.int64)
    doc = publish_store(store, settings, model=default_model_name(save_path),
                        cpu_cache_percentage=params.get("tiemb/cpu_cache_percentage"), profile=profile)
    return {"address": settings.address, "namespace": doc["namespace"], "model": doc["model"],
            "tables": {n: {k: t[k] for k in ("version", "written_values", "host_rows", "test_data_host_hit_rate")
                           if k in t} for n, t in doc["tables"].items()},
            "cpu_cache_percentage": doc["cpu_cache_percentage"],
            "policy": "static host tier: the hottest rows of the test data (cpu_cache_percentage of each table), "
                      "chosen at load; every other row read from the cluster on each call that needs it",
            "recorded_in": "store.json's distributed object in the table store (only the host tier's rows on disk)"}
