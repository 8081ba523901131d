"""The W&D reference model's embedding stage served from a Redis Cluster
(issue 16): per-call latency (p50, p99) and throughput with 70% and 90% of
each table's rows only in the cluster, against the all-resident CPU engine,
same inputs, same process, calls alternated; round trips, bytes and block
values per call; per-tier hit rates.

The stage measured is the one fused lookup the optimized W&D model makes per
batch: its 52 tables (26 deep, dim 16; 26 wide, dim 1; deep and wide of a
feature share ids), Keras-Embedding gathers, Zipf(1.1) ids from
tiemb.bench.models.random_batch. The dense tower does not depend on where
the rows live and is left out. The host tier holds the most frequent ids of
20 profile batches (another seed than the measured batches).

    python benchmarks/distributed_bench.py                 # starts a local 3+3 cluster in a temp dir
    python benchmarks/distributed_bench.py --address h:p   # an existing cluster

With ``LD_PRELOAD`` of benchmarks/tools/malloc_count.c's library and
``--mallocs``, a last column counts the process's malloc/calloc/realloc calls
per lookup call (the Python wrapper's own are in the all-resident row too).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

import tiemb
from tiemb import distributed as dist
from tiemb.bench.models import ModelSpec, random_batch, vocab_for


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", help="cluster address (default: start a local 3-master 3-replica cluster)")
    ap.add_argument("--scale", default="small", help="tiemb.bench.models scale: tiny, small, full (default small)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--calls", type=int, default=300, help="timed calls per configuration")
    ap.add_argument("--host-shares", default="0.3,0.1", help="host tier shares to measure (1 - share: cluster only)")
    ap.add_argument("--block-rows", type=int, default=dist.DEFAULT_BLOCK_ROWS)
    ap.add_argument("--threads", type=int, default=0, help="engine threads (0 = all cores)")
    ap.add_argument("--mallocs", action="store_true",
                    help="count allocations per call (needs LD_PRELOAD of benchmarks/tools/malloc_count.c)")
    args = ap.parse_args()
    with_cluster(args.address, lambda address: run(args, address), "distributed_bench")


def with_cluster(address, body, who: str) -> None:
    """body(address): on the given cluster, or on a local 3-master 3-replica
    one started for it (in a temporary directory) and stopped afterwards."""
    cluster = None
    if address is None:
        from tiemb.distributed.local_cluster import RedisCluster, redis_missing_reason

        why = redis_missing_reason()
        if why:
            raise SystemExit(f"{who}: cannot start a local cluster: {why}")
        cluster = RedisCluster(tempfile.mkdtemp(prefix=f"tiemb-{who}-redis-")).start()
        address = cluster.address
    try:
        body(address)
    finally:
        if cluster is not None:
            cluster.stop()


def wd_tables(vocab) -> dict:
    """The W&D embedding stage's tables, seeded: emb_i (dim 16) and wide_i (dim 1) per feature."""
    rng = np.random.default_rng(0)
    tables = {}
    for i, v in enumerate(vocab):
        tables[f"emb_{i}"] = rng.standard_normal((v, 16)).astype(np.float32)
        tables[f"wide_{i}"] = rng.standard_normal((v, 1)).astype(np.float32)
    return tables


def wd_slots(ids, nfeat: int) -> list:
    """One gather slot per table; a feature's deep and wide tables read the same ids."""
    return [tiemb.Slot(ids[f"{kind}_{i}"], "sum", "gather", feature=i) for kind in ("emb", "wide")
            for i in range(nfeat)]


def wd_caller(groups, batches, nfeat: int):
    """call(label, b): group `label` on batch b (modulo), the feature columns fed to both its deep and wide slots."""
    def call(label, b):
        cat = batches[b % len(batches)]
        cols = [np.ascontiguousarray(cat[:, i]) for i in range(nfeat)]
        return groups[label].lookup(cols + cols)
    return call


def run(args, address: str) -> None:
    vocab = vocab_for(args.scale)
    spec = ModelSpec("wd", vocab, 16)
    tables = wd_tables(vocab)
    settings = dist.DistributedSettings(address, namespace="bench", refresh_seconds=0).validate()
    client = dist.connect(settings)
    t0 = time.monotonic()
    written = 0
    for name, t in tables.items():
        written += dist.publish_table(client, "bench", "wd", name, t, block_rows=args.block_rows)["written_values"]
    publish_s = time.monotonic() - t0

    prof_rng = np.random.default_rng(1)
    profile = [random_batch(spec, args.batch, prof_rng)["cat"] for _ in range(20)]
    meas_rng = np.random.default_rng(2)
    batches = [random_batch(spec, args.batch, meas_rng)["cat"] for _ in range(50)]

    nfeat = len(vocab)
    engines = {}
    resident = tiemb.EmbeddingEngine(args.batch, nfeat, 1, args.threads)
    rid = {n: resident.add_table(t) for n, t in tables.items()}
    engines["all resident"] = (resident, rid, None)
    for share in [float(s) for s in args.host_shares.split(",")]:
        eng = tiemb.EmbeddingEngine(args.batch, nfeat, 1, args.threads)
        hosts = {}
        for i in range(nfeat):
            ids = np.concatenate([p[:, i] for p in profile])
            for kind in ("emb", "wide"):
                hosts[f"{kind}_{i}"] = dist.host_ids(vocab[i], share, ids)
        d = dist.DistributedTables(eng, settings, "wd", list(tables), hosts, refresh_seconds=0)
        engines[f"{1 - share:.0%} rows cluster-only"] = (eng, d.table_ids, d)

    groups = {label: eng.group(wd_slots(ids, nfeat)) for label, (eng, ids, _) in engines.items()}
    call = wd_caller(groups, batches, nfeat)

    # Same outputs before timing.
    ref = call("all resident", 0)
    for label in groups:
        out = call(label, 0)
        assert all(np.array_equal(a, r) for a, r in zip(out, ref)), f"{label}: outputs differ from resident"
    for label in groups:
        for b in range(10):
            call(label, b)

    labels = list(groups)
    times = {label: [] for label in labels}
    mallocs = {label: 0 for label in labels}
    count = _malloc_counter() if args.mallocs else None
    before = {label: (engines[label][2].client.stats(), engines[label][2].stats()["tables"]) for label in labels
              if engines[label][2] is not None}
    for k in range(args.calls):
        order = labels[k % len(labels):] + labels[:k % len(labels)]  # rotate who goes first
        for label in order:
            m = count() if count else 0
            t = time.perf_counter()
            call(label, k)
            times[label].append(time.perf_counter() - t)
            mallocs[label] += (count() - m) if count else 0

    print(f"# {time.strftime('%Y-%m-%d')}, {platform.node()}: {cpu_name()} ({os.cpu_count()} cores), "
          f"Python {platform.python_version()}, cluster: {'local 3 masters + 3 replicas on loopback, same machine' if not args.address else args.address}")
    print(f"# W&D embedding stage, scale {args.scale}: {len(tables)} tables, {sum(t.shape[0] for t in tables.values())} "
          f"rows; batch {args.batch}; {args.calls} calls per row, alternated; block_rows {args.block_rows}; "
          f"publish {written} values in {publish_s:.1f} s")
    extra = " mallocs/call |" if count else ""
    print("| configuration | p50 ms | p99 ms | samples/s | round trips/call | bytes in/call | values/call | host hit rate | "
          "cluster hit rate |" + extra)
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if count else ""))
    for label in labels:
        ts = np.array(times[label]) * 1e3
        thr = args.batch / (ts.mean() / 1e3)
        if engines[label][2] is None:
            print(f"| {label} | {np.percentile(ts, 50):.2f} | {np.percentile(ts, 99):.2f} | {thr:,.0f} | 0 | 0 | 0 | 1.00 | "
                  "0.00 |" + (f" {mallocs[label] / args.calls:,.0f} |" if count else ""))
            continue
        d = engines[label][2]
        c0, t0s = before[label]
        c1, t1s = d.client.stats(), d.stats()["tables"]
        n = args.calls
        hits = sum(t1s[x]["host_hits"] - t0s[x]["host_hits"] for x in t1s)
        rows = sum(t1s[x]["cluster_rows"] - t0s[x]["cluster_rows"] for x in t1s)
        vals = sum(t1s[x]["cluster_values"] - t0s[x]["cluster_values"] for x in t1s)
        print(f"| {label} | {np.percentile(ts, 50):.2f} | {np.percentile(ts, 99):.2f} | {thr:,.0f} | "
              f"{(c1['round_trips'] - c0['round_trips']) / n:.2f} | {(c1['bytes_in'] - c0['bytes_in']) / n:,.0f} | "
              f"{vals / n:.0f} | {hits / (hits + rows):.3f} | {rows / (hits + rows):.3f} |" +
              (f" {mallocs[label] / n:,.0f} |" if count else ""))
    for _, (_, _, d) in engines.items():
        if d is not None:
            d.close()


def _malloc_counter():
    """tiemb_malloc_count of the preloaded counter library; SystemExit when absent."""
    import ctypes

    try:
        f = ctypes.CDLL(None).tiemb_malloc_count
    except AttributeError:
        raise SystemExit("--mallocs needs LD_PRELOAD of the counter: cc -O2 -shared -fPIC -o /tmp/malloc_count.so "
                         "benchmarks/tools/malloc_count.c -ldl")
    f.restype = ctypes.c_ulonglong
    return f


if __name__ == "__main__":
    main()
