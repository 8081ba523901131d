"""The GPU engine's lowest tier in a Redis Cluster (issue 16): the W&D
reference embedding stage (as benchmarks/distributed_bench.py) on the GPU
engine with a GPU cache of 10% of each table's rows over a host tier of 30%
and the cluster, against the all-resident GPU engine and the CPU engine over
the same cluster; same inputs, same process, calls alternated. Host inputs
and outputs (numpy), so every configuration pays the same transfers.

    python benchmarks/distributed_gpu_bench.py            # starts a local 3+3 cluster (needs redis-server)
    python benchmarks/distributed_gpu_bench.py --address h:p
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import tiemb
from tiemb import distributed as dist
from tiemb.bench.models import ModelSpec, random_batch, vocab_for

from distributed_bench import wd_caller, wd_slots, wd_tables, with_cluster   # this script's folder is on sys.path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", help="cluster address (default: start a local 3-master 3-replica cluster)")
    ap.add_argument("--scale", default="small", help="tiemb.bench.models scale (default small)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--calls", type=int, default=200, help="timed calls per configuration")
    ap.add_argument("--host-share", type=float, default=0.3, help="host tier share of each table's rows")
    ap.add_argument("--cache", type=float, default=0.1, help="GPU cache share of each table's rows")
    args = ap.parse_args()
    if not tiemb.cuda_available():
        raise SystemExit("distributed_gpu_bench: no CUDA GPU visible (or this build has no CUDA part)")
    with_cluster(args.address, lambda address: run(args, address), "distributed_gpu_bench")


def engines(args, address, tables, profile):
    """{label: (engine, table ids, DistributedTables or None)}."""
    settings = dist.DistributedSettings(address, namespace="gpubench", refresh_seconds=0).validate()
    client = dist.connect(settings)
    for name, t in tables.items():
        dist.publish_table(client, "gpubench", "wd", name, t)
    nfeat = len(tables) // 2
    hosts = {n: dist.host_ids(t.shape[0], args.host_share, profile[n]) for n, t in tables.items()}
    cpu = tiemb.EmbeddingEngine(args.batch, nfeat, 1)
    d = dist.DistributedTables(cpu, settings, "wd", list(tables), hosts, refresh_seconds=0)
    gpu = tiemb.GpuEmbeddingEngine(args.batch, nfeat, 1)
    tiers = tiemb.TierConfig(cache_percentage=args.cache)
    gid = {n: gpu.add_remote_table(d._remote[n], tiers, profile_ids=profile[n]) for n in tables}
    res = tiemb.GpuEmbeddingEngine(args.batch, nfeat, 1)
    rid = {n: res.add_table(t) for n, t in tables.items()}
    return {"GPU all resident": (res, rid, None),
            f"GPU cache {args.cache:.0%} over the cluster": (gpu, gid, d),
            "CPU engine over the cluster": (cpu, d.table_ids, d)}


def run(args, address: str) -> None:
    vocab = vocab_for(args.scale)
    spec = ModelSpec("wd", vocab, 16)
    tables = wd_tables(vocab)
    prof_rng = np.random.default_rng(1)
    prof = [random_batch(spec, args.batch, prof_rng)["cat"] for _ in range(20)]
    profile = {f"{k}_{i}": np.concatenate([p[:, i] for p in prof]) for i in range(len(vocab)) for k in ("emb", "wide")}
    meas_rng = np.random.default_rng(2)
    batches = [random_batch(spec, args.batch, meas_rng)["cat"] for _ in range(50)]
    configs = engines(args, address, tables, profile)
    nfeat = len(vocab)
    groups = {label: eng.group(wd_slots(ids, nfeat)) for label, (eng, ids, _) in configs.items()}
    call = wd_caller(groups, batches, nfeat)

    labels = list(groups)
    ref = call(labels[0], 0)
    for label in labels:  # exact before timing
        assert all(np.array_equal(a, r) for a, r in zip(call(label, 0), ref)), f"{label}: outputs differ"
        for b in range(10):
            call(label, b)
    d = configs[labels[1]][2]
    times = {label: [] for label in labels}
    trips = {label: 0 for label in labels}
    for k in range(args.calls):
        for label in labels[k % len(labels):] + labels[:k % len(labels)]:
            before = d.client.stats()["round_trips"]
            t = time.perf_counter()
            call(label, k)
            times[label].append(time.perf_counter() - t)
            trips[label] += d.client.stats()["round_trips"] - before
    import tiemb._C as C

    print(f"# {time.strftime('%Y-%m-%d')}, {platform.node()}: {C.cuda_device_name(0)}; cluster "
          f"{'local 3 masters + 3 replicas on loopback' if args.address is None else args.address}; scale "
          f"{args.scale}, {len(tables)} tables, batch {args.batch}, {args.calls} calls per row, alternated; host "
          f"tier {args.host_share:.0%} of rows")
    print("| configuration | p50 ms | p99 ms | samples/s | round trips/call |")
    print("| --- | --- | --- | --- | --- |")
    for label in labels:
        ts = np.array(times[label]) * 1e3
        print(f"| {label} | {np.percentile(ts, 50):.2f} | {np.percentile(ts, 99):.2f} | "
              f"{args.batch / (ts.mean() / 1e3):,.0f} | {trips[label] / args.calls:.2f} |")
    w = configs[labels[1]][0].stats(configs[labels[1]][1]["emb_0"])
    print(f"# GPU cache, table emb_0: gpu_hit_rate {w.get('gpu_hit_rate', 0):.3f}, backing (host tier + cluster) "
          f"{w.get('backing_hit_rate', 0):.3f}")
    d.close()


if __name__ == "__main__":
    main()
