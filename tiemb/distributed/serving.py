"""Serving from the cluster: a CPU engine whose tables are remote, a host
tier of each table's hottest rows, and refresh to follow updates.

The refresh bound: a version made current by ``tiemb update`` (or
:func:`update_table`) is served by every lookup that starts after the next
:meth:`DistributedTables.refresh` returns; with ``refresh_seconds = p > 0``
the background refresh runs every ``p`` seconds, so an update is served at
most ``p`` seconds plus one refresh (a few round trips, and re-reading the
resident copies of the changed rows) after the update returned.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Dict, Optional, Sequence

import numpy as np

from .. import _C
from .publish import _DTYPE_CODES, DistributedError, current_version, resolve_layout
from .settings import DistributedSettings, connect

# The layout before store.json recorded the cluster; refused at load.
_OLD_LAYOUT = ("distributed.json", os.path.join("distributed", "remote.txt"))


def host_ids(rows: int, cpu_cache_percentage: float, profile_ids: Optional[np.ndarray]) -> np.ndarray:
    """The host tier of a table: ceil(cpu_cache_percentage * rows) rows, the
    most frequent in ``profile_ids`` first, ties and unseen rows by ascending
    id (the same order as the GPU engine's tiers, csrc/core/tier_config.h)."""
    if not 0.0 <= cpu_cache_percentage <= 1.0:
        raise ValueError(f"cpu_cache_percentage must be in [0, 1], got {cpu_cache_percentage!r}")
    limit = min(rows, math.ceil(cpu_cache_percentage * rows))
    if limit == 0:
        return np.zeros(0, dtype=np.int64)
    profile = np.zeros(0, dtype=np.int64) if profile_ids is None else np.asarray(profile_ids, dtype=np.int64).ravel()
    return np.asarray(_C.hot_rows(rows, profile, limit), dtype=np.int64)


class DistributedTables:
    """Remote tables on one CPU engine, kept on the cluster's current versions.

    Args:
        engine: a :class:`tiemb.EmbeddingEngine` with no lookup group yet.
        settings: :class:`DistributedSettings` (address, namespace, ...).
        model: the model part of the keys.
        tables: table names (as published).
        host_rows: per table, the row ids of its host tier (hottest first);
            see :func:`host_ids`.
        refresh_seconds: overrides ``settings.refresh_seconds``; 0 = no
            background refresh (call :meth:`refresh`).

    Raises DistributedError naming the table when it (or its version) is
    not in the cluster, or when its keys were evicted.
    """

    def __init__(self, engine, settings: DistributedSettings, model: str, tables: Sequence[str],
                 host_rows: Dict[str, np.ndarray], refresh_seconds: Optional[float] = None):
        self.settings = settings
        self.model = model
        self.client = connect(settings)
        self.table_ids: Dict[str, int] = {}
        self._remote: Dict[str, object] = {}
        self._layouts: Dict[str, dict] = {}
        self._lock = threading.Lock()
        for name in tables:
            version = current_version(self.client, settings.namespace, model, name)
            layout = resolve_layout(self.client, settings.namespace, model, name, version)
            remote = _C.RemoteTable(self.client, name, _DTYPE_CODES[layout["dtype"]], layout["rows"], layout["dim"],
                                    layout["block_rows"], layout["layers"], layout["block_layer"].tolist(),
                                    np.asarray(host_rows.get(name, []), dtype=np.int64).tolist())
            self.table_ids[name] = engine.add_remote_table(remote)
            self._remote[name] = remote
            self._layouts[name] = layout
        self._stop = threading.Event()
        self._thread = None
        period = settings.refresh_seconds if refresh_seconds is None else refresh_seconds
        if period > 0:
            self._thread = threading.Thread(target=self._refresh_loop, args=(period,), daemon=True,
                                            name="tiemb-refresh")
            self._thread.start()
        self.last_refresh_error: Optional[str] = None

    def versions(self) -> Dict[str, str]:
        return {n: l["version"] for n, l in self._layouts.items()}

    def refresh(self) -> Dict[str, str]:
        """Switches every table whose ``current`` version moved; returns
        {table: new version} for those that changed. The resident copies of
        the changed rows are re-read before the switch."""
        with self._lock:
            names = list(self._remote)
            keys = [["GET", f"{self.settings.namespace}:{self.model}:{n}:current"] for n in names]
            currents = self.client.run(keys)
            changed = {}
            for name, cur in zip(names, currents):
                if cur is None:
                    raise DistributedError(f"distributed table {name!r}: its current version key vanished from "
                                           "the cluster (evicted or deleted)")
                cur = cur.decode()
                old = self._layouts[name]
                if cur == old["version"]:
                    continue
                new = resolve_layout(self.client, self.settings.namespace, self.model, name, cur)
                if (new["rows"], new["dim"], new["dtype"], new["block_rows"]) != \
                        (old["rows"], old["dim"], old["dtype"], old["block_rows"]):
                    raise DistributedError(f"distributed table {name!r}: version {cur} has another shape or dtype "
                                           "than the one served; re-optimize instead of updating")
                old_keys = [old["layers"][i] for i in old["block_layer"]]
                new_keys = [new["layers"][i] for i in new["block_layer"]]
                blocks = np.array([k for k, (a, b) in enumerate(zip(old_keys, new_keys)) if a != b], dtype=np.int64)
                br = new["block_rows"]
                ids = (blocks[:, None] * br + np.arange(br)[None, :]).ravel() if blocks.size else blocks
                ids = ids[ids < new["rows"]]
                self._remote[name].update(new["layers"], new["block_layer"].tolist(), ids.tolist())
                self._layouts[name] = new
                changed[name] = cur
            return changed

    def _refresh_loop(self, period: float) -> None:
        while not self._stop.wait(period):
            try:
                self.refresh()
                self.last_refresh_error = None
            except Exception as e:  # keep serving the last good version; the error is visible in stats()
                self.last_refresh_error = str(e)

    def stats(self) -> dict:
        """Per table the tier counters (host_hits, cluster_rows, cluster_values,
        host_rows, refreshes), and the client's round trips and bytes."""
        out = {"tables": {n: r.stats() for n, r in self._remote.items()}, "cluster": self.client.stats(),
               "versions": self.versions()}
        if self.last_refresh_error:
            out["last_refresh_error"] = self.last_refresh_error
        return out

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __del__(self):
        stop = getattr(self, "_stop", None)  # absent when __init__ failed
        if stop is not None:
            stop.set()


def read_distributed(store: str) -> Optional[dict]:
    """store.json's ``distributed`` object of a published store (namespace,
    model, cpu_cache_percentage, settings, tables: a list of name, version,
    block_rows, host_rows, host_ids, host_ids_checksum), or None when the
    store was not published. DistributedError for a store of the layout
    before store.json recorded the cluster (re-publish it)."""
    doc = _C.read_store_manifest(store).get("distributed")
    if doc is None:
        for old in _OLD_LAYOUT:
            if os.path.exists(os.path.join(store, old)):
                raise DistributedError(
                    f"table store {store}: has {old} but its store.json records no cluster: this is the "
                    f"distributed layout before store.json recorded it, no longer served; re-publish it with this "
                    f"tiemb (tiemb publish {store} --address ...) or re-optimize")
    return doc


def stored_host_ids(store: str, name: str, recorded: Optional[dict]) -> Optional[np.ndarray]:
    """The host tier order a store records for table ``name`` (hottest
    first), or None: from store.json's ``distributed``, else from the layout
    before it (``distributed/<name>.host.i64``) so that re-publishing such a
    store keeps its order."""
    for t in (recorded or {}).get("tables", []):
        if t["name"] == name:
            return np.fromfile(os.path.join(store, t["host_ids"]), dtype="<i8")
    old = os.path.join(store, "distributed", name + ".host.i64")
    return np.fromfile(old, dtype="<i8") if os.path.isfile(old) else None


def open_store(store: str, *, address: Optional[str] = None, num_threads: int = 0,
               refresh_seconds: Optional[float] = None, cpu_cache_percentage: Optional[float] = None):
    """A CPU engine over a published table store: (EmbeddingEngine, DistributedTables).

    Args:
        store: a table store written by ``optimize()`` with
            ``tiemb/enable_distributed`` (or ``tiemb publish``): its
            store.json's ``distributed`` names the namespace, model, settings
            and versions, and each table's host tier ids (hottest first).
        address: the cluster; default: the one recorded, else TIEMB_REDIS_ADDRESS.
        num_threads: the engine's lookup threads (0 = all cores).
        refresh_seconds: overrides the recorded tiemb/refresh_seconds.
        cpu_cache_percentage: shrink the host tier (the hottest rows of the
            recorded order first; at most the recorded share: the store's
            ids); default: as recorded.

    The host tier is read from the cluster's current version (which an
    update may have moved past the rows the store carries).
    """
    from ..engine import EmbeddingEngine

    doc = read_distributed(store)
    if doc is None:
        raise DistributedError(f"table store {store}: its store.json records no cluster; it was not published "
                               "(optimize with tiemb/enable_distributed, or tiemb publish STORE --address ...)")
    manifest = _C.read_store_manifest(store)
    s = doc["settings"]
    params = {"tiemb/distributed_address": s["address"], "tiemb/distributed_namespace": doc["namespace"],
              "tiemb/distributed_timeout_ms": s["timeout_ms"], "tiemb/distributed_retries": s["retries"],
              "tiemb/refresh_seconds": s["refresh_seconds"]}
    settings = DistributedSettings.from_params(params, address=address)
    engine = EmbeddingEngine(manifest["max_batch_size"], manifest["slot_num"], manifest["max_nnz"], num_threads)
    hosts, shapes = {}, {}
    for t in doc["tables"]:
        i = manifest["tables"].index(t["name"])
        shapes[t["name"]] = (manifest["rows"][i], manifest["dims"][i], manifest["dtypes"][i])
        ids = stored_host_ids(store, t["name"], doc)
        if cpu_cache_percentage is not None:
            ids = ids[:min(len(ids), math.ceil(cpu_cache_percentage * shapes[t["name"]][0]))]
        hosts[t["name"]] = ids
    dist = DistributedTables(engine, settings, doc["model"], [t["name"] for t in doc["tables"]], hosts,
                             refresh_seconds)
    for name, want in shapes.items():
        layout = dist._layouts[name]
        if (layout["rows"], layout["dim"], layout["dtype"]) != want:
            raise DistributedError(f"distributed table {name!r}: the cluster holds a {layout['rows']} x "
                                   f"{layout['dim']} {layout['dtype']} table, the store expects {want[0]} x "
                                   f"{want[1]} {want[2]} (namespace {settings.namespace!r}, model {doc['model']!r})")
    return engine, dist
