"""``tiemb publish STORE --address ...`` and ``tiemb update STORE --table T --rows FILE.npz``."""

from __future__ import annotations

import json


def add_parsers(sub) -> None:
    """Adds the ``publish`` and ``update`` subcommands."""
    p = sub.add_parser("publish", help="write a table store's tables to a Redis Cluster (tiemb/enable_distributed); "
                                       "idempotent: a second run writes nothing")
    p.add_argument("store", metavar="STORE", help="table store, optimized SavedModel directory or frozen .pb")
    _cluster_args(p)
    p.add_argument("--model", help="model part of the keys (default: the model directory's name)")
    p.add_argument("--block-rows", type=int, default=None, help="rows per cluster value (default 16)")
    p.add_argument("--cpu-cache-percentage", type=float, help="host tier share (default: the store's, else 1)")
    p.set_defaults(func=_publish)
    u = sub.add_parser("update", help="write new rows of one table to the cluster as a new version; serving "
                                      "processes switch at their next refresh")
    u.add_argument("store", metavar="STORE", help="a published table store (or its model)")
    _cluster_args(u)
    u.add_argument("--table", required=True, help="table name (a file name of the store)")
    u.add_argument("--rows", required=True, metavar="FILE.npz", help="arrays 'ids' (n,) and 'rows' (n, dim)")
    u.add_argument("--keep-versions", type=int, default=2, metavar="K",
                   help="versions kept readable after the switch (>= 2: the replaced one is served until every "
                        "process refreshed); blocks only older versions read are deleted, never the published "
                        "version's; 0 keeps every version (default 2)")
    u.set_defaults(func=_update)


def _cluster_args(p) -> None:
    p.add_argument("--address", help="host:port[,host:port...] of cluster nodes (default: the store's, then "
                                     "TIEMB_REDIS_ADDRESS)")
    p.add_argument("--namespace", help="key namespace (default: the store's, else 'tiemb')")
    p.add_argument("--timeout-ms", type=int, help="per-node timeout (default 1000)")
    p.add_argument("--retries", type=int, help="retries per batch (default 5)")


def _recorded_params(doc: dict) -> dict:
    """The tiemb/* values a published store records (store.json's distributed)."""
    if not doc:
        return {}
    s = doc["settings"]
    return {"tiemb/distributed_address": s["address"], "tiemb/distributed_namespace": doc["namespace"],
            "tiemb/distributed_timeout_ms": s["timeout_ms"], "tiemb/distributed_retries": s["retries"],
            "tiemb/refresh_seconds": s["refresh_seconds"]}


def _settings(args, recorded: dict):
    from .settings import DistributedSettings

    params = dict(recorded)
    for key, value in (("tiemb/distributed_namespace", args.namespace), ("tiemb/distributed_timeout_ms", args.timeout_ms),
                       ("tiemb/distributed_retries", args.retries)):
        if value is not None:
            params[key] = value
    return DistributedSettings.from_params(params, address=args.address), params


def _publish(args) -> int:
    from .. import _C
    from ..check import store_of
    from .settings import DEFAULT_BLOCK_ROWS
    from .store import publish_store

    store = store_of(args.store)
    doc = _C.read_store_manifest(store).get("distributed") or {}  # the old layout is re-published from its files
    settings, _ = _settings(args, _recorded_params(doc))
    out = publish_store(store, settings, model=args.model,
                        block_rows=args.block_rows or DEFAULT_BLOCK_ROWS,
                        cpu_cache_percentage=args.cpu_cache_percentage,
                        progress=lambda name, r: print(f"{name}: version {r['version']}, {r['written_values']} values "
                                                       f"written, {r['skipped_values']} already there"))
    print(json.dumps({"namespace": out["namespace"], "model": out["model"],
                      "tables": {n: t["version"] for n, t in out["tables"].items()}}))
    return 0


def _update(args) -> int:
    import numpy as np

    from ..check import store_of
    from .publish import DistributedError, update_table
    from .serving import read_distributed
    from .settings import connect

    store = store_of(args.store)
    doc = read_distributed(store)
    if doc is None:
        raise DistributedError(f"{store}: not published (its store.json records no cluster); run tiemb publish "
                               "first")
    names = [t["name"] for t in doc["tables"]]
    if args.table not in names:
        raise DistributedError(f"--table {args.table!r}: not a table of {store} (tables: {sorted(names)})")
    settings, _ = _settings(args, _recorded_params(doc))
    with np.load(args.rows, allow_pickle=False) as f:
        if "ids" not in f.files or "rows" not in f.files:
            raise DistributedError(f"--rows {args.rows}: needs arrays 'ids' and 'rows', has {f.files}")
        ids, rows = f["ids"], f["rows"]
    r = update_table(connect(settings), settings.namespace, doc["model"], args.table, ids, rows,
                     keep_versions=None if args.keep_versions == 0 else args.keep_versions)
    print(f"{args.table}: version {r['version']} over {r['base']}: {r['ids']} rows in {r['changed_blocks']} values"
          f" ({r['attempts']} attempt(s); {r['pruned']} blocks of older versions deleted)")
    return 0
