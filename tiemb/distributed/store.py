"""A table store's tables into the cluster, and what the store records
about them (``distributed.json`` and the host tier's row ids).

``distributed.json`` (until the store format absorbs it)::

    {"format": 1, "namespace": ..., "model": ..., "params": {tiemb/distributed_* values},
     "tables": {"<file>": {"version", "rows", "dim", "dtype", "block_rows", "host_ids": "distributed/<file>.host.i64"}}}

``distributed/remote.txt``: the same for the C++ store loader (the
TensorFlow op's engine), see csrc/distributed/remote_store.h. Host ids are
raw little-endian int64, hottest first.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np

from .. import _C
from .publish import publish_table
from .serving import DISTRIBUTED_JSON, host_ids
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


def publish_store(store: str, settings: DistributedSettings, *, model: Optional[str] = None,
                  block_rows: int = DEFAULT_BLOCK_ROWS, cpu_cache_percentage: Optional[float] = None,
                  profile: Optional[Dict[str, np.ndarray]] = None, params: Optional[dict] = None,
                  progress=None) -> dict:
    """Publishes every table of ``store`` and records it in the store.

    Args:
        store: a table store directory.
        settings: the cluster (:class:`DistributedSettings`).
        model: key part naming the model; default :func:`default_model_name`.
        block_rows: rows per cluster value.
        cpu_cache_percentage: share of each table's rows in the serving host
            tier; default the store's own tier setting (store.json), else 1.0.
        profile: per table name, ids seen in the test data (the host tier
            takes the most frequent first); None keeps a previous publish's
            host tier, else the lowest ids.
        params: the resolved tiemb/* values to record (namespace, timeouts, ...).
        progress: called with (table, result) after each table.

    Returns the distributed.json document written.
    """
    client = connect(settings)
    manifest = _C.read_store_manifest(store)
    cfg_path = os.path.join(store, "tiemb_config.json")
    cfg = json.load(open(cfg_path)) if os.path.isfile(cfg_path) else {}
    if cpu_cache_percentage is None:
        cpu_cache_percentage = float(manifest.get("tiers", {}).get("cpu_cache_percentage") or 1.0)
    model = model or default_model_name(store)
    recorded = {k: v for k, v in (params or cfg).items() if k.startswith("tiemb/distributed_") or
                k == "tiemb/refresh_seconds"}
    recorded["tiemb/distributed_namespace"] = settings.namespace
    recorded["tiemb/distributed_address"] = settings.address
    recorded["tiemb/distributed_timeout_ms"] = settings.timeout_ms
    recorded["tiemb/distributed_retries"] = settings.retries
    recorded["tiemb/refresh_seconds"] = settings.refresh_seconds
    os.makedirs(os.path.join(store, "distributed"), exist_ok=True)
    doc = {"format": 1, "namespace": settings.namespace, "model": model, "params": recorded, "tables": {},
           "cpu_cache_percentage": cpu_cache_percentage}
    for name in manifest["tables"]:
        table = read_store_table(store, name)
        result = publish_table(client, settings.namespace, model, name, table, block_rows)
        rel = f"distributed/{name}.host.i64"
        path = os.path.join(store, rel)
        if profile is not None or not os.path.isfile(path):
            ids = host_ids(table.shape[0], cpu_cache_percentage, None if profile is None else profile.get(name))
            ids.astype("<i8").tofile(path)
        doc["tables"][name] = {"version": result["version"], "rows": result["rows"], "dim": result["dim"],
                               "dtype": result["dtype"], "block_rows": block_rows, "host_ids": rel,
                               "written_values": result["written_values"]}
        seen = None if profile is None else profile.get(name)
        if seen is not None and len(seen):
            # Share of the test data's lookups (duplicates included) the host tier serves.
            host = np.fromfile(path, dtype="<i8")
            doc["tables"][name]["test_data_host_hit_rate"] = float(np.isin(seen, host).mean())
        if progress:
            progress(name, result)
    lines = ["tiemb-remote 1", f"address {settings.address}", f"namespace {settings.namespace}", f"model {model}",
             f"timeout_ms {settings.timeout_ms}", f"retries {settings.retries}",
             f"refresh_seconds {settings.refresh_seconds!r}"]
    lines += [f"table {n} {t['host_ids']}" for n, t in doc["tables"].items()]
    tmp = os.path.join(store, "distributed", "remote.txt.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, os.path.join(store, "distributed", "remote.txt"))
    tmp = os.path.join(store, DISTRIBUTED_JSON + ".tmp")
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(store, DISTRIBUTED_JSON))
    return doc


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
    doc = publish_store(store, settings, model=default_model_name(save_path), params=params,
                        cpu_cache_percentage=params.get("tiemb/cpu_cache_percentage"), profile=profile)
    return {"address": settings.address, "namespace": doc["namespace"], "model": doc["model"],
            "tables": {n: {k: t[k] for k in ("version", "written_values", "test_data_host_hit_rate") if k in t}
                       for n, t in doc["tables"].items()},
            "cpu_cache_percentage": doc["cpu_cache_percentage"],
            "policy": "static host tier: the hottest rows of the test data (cpu_cache_percentage of each table), "
                      "chosen at load; every other row read from the cluster on each call that needs it",
            "recorded_in": "distributed.json in the table store"}
