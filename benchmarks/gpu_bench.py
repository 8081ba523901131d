"""GPU engine benchmarks, side by side in one run (needs cupy; torch for the peers).

    python benchmarks/gpu_bench.py [--json OUT] [--quick] [--tiered-only] [--no-sim] [--tiered-dims 16,64]

Cases (issue 3): W&D-like batch 512 x 26 slots, dim 16, nnz 1 and 10, 1M-row
tables, GPU-resident; large batch 65536 x 26 slots, dim 64, nnz 4; tiered
tables 5x larger than the GPU cache, Zipf(1.1) ids, zero-copy vs batched copy,
and every tiered variant of issue 15 (TIERED_CONFIGS: listed probe, listed
host reads, lane probe, prefetch of the next batch; TIEMB_BENCH_TIERED=key,...
picks some).
Peers: torch.nn.functional.embedding_bag per slot (eager and in a CUDA graph),
and TensorFlow's op sequence (unique + gather + segment mean) written in torch.
Times are CUDA-event medians over rounds of back-to-back calls; effective
bandwidth = (rows read, one per id, + output written) / time, next to a
device-to-device copy measured in the same run.
"""

import argparse
import json
import os
import statistics
import sys

import cupy as cp
import numpy as np

import tiemb
from tiemb.bench.data import zipf_ids


def event_time_us(fn, *, iters=50, rounds=15, warmup=10, stream=None):
    """Median microseconds per call of `fn` over `rounds` rounds of `iters` calls.

    Default: cupy's current stream, which is the legacy default stream that
    torch launches on too, so torch peers are timed the same way."""
    stream = stream or cp.cuda.get_current_stream()
    for _ in range(warmup):
        fn()
    stream.synchronize()
    samples = []
    for _ in range(rounds):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record(stream)
        for _ in range(iters):
            fn()
        end.record(stream)
        end.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, end) * 1e3 / iters)
    return statistics.median(samples)


def copy_bandwidth_gbs():
    n = 1 << 28  # 1 GiB of float32
    a = cp.random.random(n, dtype=cp.float32)
    b = cp.empty_like(a)
    t = event_time_us(lambda: cp.copyto(b, a), iters=10, rounds=7)
    return 2 * a.nbytes / (t * 1e-6) / 1e9


def h2d_bandwidth_gbs(nbytes=1 << 30):
    """Host-to-device bandwidth of one large cudaMemcpy from pinned memory (the
    tiered floor's denominator: the most the host link moves in bulk)."""
    pinned = cp.cuda.alloc_pinned_memory(nbytes)
    dst = cp.empty(nbytes, dtype=cp.uint8)
    stream = cp.cuda.get_current_stream()

    def copy():
        cp.cuda.runtime.memcpyAsync(dst.data.ptr, pinned.ptr, nbytes, cp.cuda.runtime.memcpyHostToDevice, stream.ptr)

    t = event_time_us(copy, iters=3, rounds=5, warmup=2)
    return nbytes / (t * 1e-6) / 1e9


class Layer:
    """One embedding layer's tables and a batch, on the GPU, for every contender."""

    def __init__(self, rng, *, slots, vocab, dim, batch, nnz, alpha=None, combiner="mean"):
        self.slots, self.vocab, self.dim, self.batch, self.nnz = slots, vocab, dim, batch, nnz
        self.combiner = combiner
        self.tables = [rng.standard_normal((vocab, dim), dtype=np.float32) for _ in range(slots)]
        draw = (lambda: zipf_ids(rng, vocab, batch * nnz, alpha)) if alpha else \
            (lambda: rng.integers(0, vocab, batch * nnz, dtype=np.int64))
        self.ids = [cp.asarray(draw()) for _ in range(slots)]
        self.segs = [cp.asarray(np.repeat(np.arange(batch, dtype=np.int64), nnz)) for _ in range(slots)]
        self.offsets = cp.asarray(np.arange(0, batch * nnz + 1, nnz, dtype=np.int64))

    def bytes_moved(self):
        return self.slots * (self.batch * self.nnz * self.dim * 4 + self.batch * self.dim * 4)

    def tiemb(self, tiers=None, profile=None):
        e = tiemb.GpuEmbeddingEngine(self.batch, self.slots, self.nnz)
        slots = [tiemb.Slot(e.add_table(t, tiers, profile_ids=profile), self.combiner) for t in self.tables]
        g = e.group(slots)
        prep = g.prepare(self.ids, segment_ids=self.segs, num_rows=None)
        return e, g, prep


def torch_graph(fn):
    """`fn` captured in a torch CUDA graph, after a warm-up on a side stream
    (as torch requires before capture)."""
    import torch

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph.outputs = fn()  # kept referenced while the graph lives
    return graph


def torch_peers(layer):
    import torch
    import torch.nn.functional as F

    tabs = [torch.as_tensor(t, device="cuda") for t in layer.tables]
    ids = [torch.as_tensor(i, device="cuda") for i in layer.ids]
    segs = [torch.as_tensor(s, device="cuda") for s in layer.segs]
    offsets = torch.as_tensor(layer.offsets[:-1], device="cuda")

    def bag():
        return [F.embedding_bag(i, t, offsets, mode=layer.combiner) for i, t in zip(ids, tabs)]

    def tf_sequence():
        outs = []
        for i, s, t in zip(ids, segs, tabs):
            uniq, inv = torch.unique(i, return_inverse=True)          # Unique
            rows = t.index_select(0, uniq).index_select(0, inv)       # GatherV2
            out = torch.zeros(layer.batch, layer.dim, device="cuda")  # SparseSegmentMean
            out.index_add_(0, s, rows)
            cnt = torch.bincount(s, minlength=layer.batch).clamp_min(1).unsqueeze(1)
            outs.append(out / cnt)
        return outs

    graph = torch_graph(bag)
    ref = [o.cpu().numpy() for o in bag()]
    return {"embedding_bag eager": bag, "embedding_bag CUDA graph": graph.replay,
            "TF sequence (torch)": tf_sequence}, ref


def gather_ceiling_gbs(layer):
    """What random row reads alone reach here: torch index_select of the same
    rows from the same tables (rows read + rows written), in a CUDA graph."""
    import torch

    tabs = [torch.as_tensor(t, device="cuda") for t in layer.tables]
    ids = [torch.as_tensor(i, device="cuda") for i in layer.ids]

    def gather():
        return [t.index_select(0, i) for t, i in zip(tabs, ids)]

    t = event_time_us(torch_graph(gather).replay)
    moved = 2 * layer.slots * layer.batch * layer.nnz * layer.dim * 4
    return moved / (t * 1e-6) / 1e9


def tiemb_graph(group, layer, reference):
    """The lookup captured in a CUDA graph on its own stream, checked against
    `reference` (outputs poisoned first, so an empty graph cannot pass)."""
    stream = cp.cuda.Stream(non_blocking=True)
    prep = group.prepare(layer.ids, segment_ids=layer.segs, stream=stream)
    with stream:
        prep.run()
        stream.synchronize()
        # Relaxed: the launch queries the previous call's status event.
        mode = getattr(cp.cuda.runtime, "streamCaptureModeRelaxed", None)
        stream.begin_capture(mode) if mode is not None else stream.begin_capture()
        prep.run()
        graph = stream.end_capture()
        for o in prep.outputs:
            o.fill(cp.nan)
        graph.launch(stream)
        stream.synchronize()
    group.synchronize()
    for got, want in zip(prep.outputs, reference):
        if not bool(cp.array_equal(got, want)):
            raise AssertionError("CUDA-graph replay of the lookup differs from a direct call")
    return graph, stream


def resident_case(name, layer, copy_bw, have_torch):
    e, g, prep = layer.tiemb()
    out = prep.run()
    g.synchronize()
    row = {"case": name, "bytes": layer.bytes_moved()}
    row["tiemb_us"] = event_time_us(prep.run)
    try:
        graph, stream = tiemb_graph(g, layer, out)
        row["tiemb_graph_us"] = event_time_us(lambda: graph.launch(stream), stream=stream)
    except Exception as exc:  # report, do not hide
        row["tiemb_graph_error"] = f"{type(exc).__name__}: {exc}"
    best = min(row["tiemb_us"], row.get("tiemb_graph_us", float("inf")))
    row["tiemb_gbs"] = layer.bytes_moved() / (best * 1e-6) / 1e9
    row["pct_of_copy_bw"] = 100 * row["tiemb_gbs"] / copy_bw
    if have_torch:
        peers, ref = torch_peers(layer)
        got = [cp.asnumpy(o) for o in out]
        row["max_abs_diff_vs_torch"] = float(max(np.max(np.abs(a - b)) for a, b in zip(got, ref)))
        row["peers_us"] = {k: event_time_us(f) for k, f in peers.items()}
        best_peer = min(row["peers_us"].values())
        row["speedup_vs_best_peer"] = best_peer / best
        row["gather_ceiling_gbs"] = gather_ceiling_gbs(layer)
    g.synchronize()
    return row


# The tiered configurations timed side by side (issue 15): key -> (label,
# TierConfig arguments, variant environment read when a group is built,
# prefetch the next batch). Variants that differ only in environment share
# one engine (tables and cache), each with a group of its own.
# TIEMB_BENCH_TIERED=key,key,... picks some (default: all).
ZC = dict(cache_percentage=0.2, host_read="zero_copy")
LISTS = {"TIEMB_TIERED_PROBE": "list", "TIEMB_TIERED_HOST_READS": "list"}
TIERED_CONFIGS = {
    "default": ("tiered 0.2, zero-copy read inside the probe (the default)", ZC, {}, False),
    "kernel": ("tiered 0.2, zero-copy, separate host-read kernel", ZC, {"TIEMB_TIERED_HOST_READS": "kernel"}, False),
    "list_probe": ("tiered 0.2, zero-copy, listed probe", ZC, {"TIEMB_TIERED_PROBE": "list"}, False),
    "list_reads": ("tiered 0.2, zero-copy, listed host reads", ZC, {"TIEMB_TIERED_HOST_READS": "list"}, False),
    "list_both": ("tiered 0.2, zero-copy, listed probe + listed host reads", ZC, LISTS, False),
    "list_both_prefetch": ("tiered 0.2, zero-copy, listed probe + reads, prefetch of the next batch", ZC, LISTS,
                           True),
    "prefetch": ("tiered 0.2, zero-copy (default path), prefetch of the next batch", ZC, {}, True),
    "lane_probe": ("tiered 0.2, zero-copy, lane probe (one lane per unique id)", ZC, {"TIEMB_TIERED_PROBE": "lane"},
                   False),
    "lane_prefetch": ("tiered 0.2, zero-copy, lane probe, prefetch of the next batch", ZC,
                      {"TIEMB_TIERED_PROBE": "lane"}, True),
    "admit": ("tiered 0.2, zero-copy, admission filter", dict(ZC, policy="lru_admit"), {}, False),
    "copy": ("tiered 0.2, batched copy", dict(cache_percentage=0.2, host_read="copy"), {}, False),
}
VARIANT_ENV = ("TIEMB_TIERED_PROBE", "TIEMB_TIERED_HOST_READS", "TIEMB_TIERED_INLINE_HOST_READS")


def tiered_group(engine, slots, env):
    """A group built under `env` (the variant variables are read when it is built)."""
    saved = {k: os.environ.pop(k, None) for k in VARIANT_ENV}
    os.environ.update(env)
    try:
        return engine.group(slots)
    finally:
        for k in VARIANT_ENV:
            os.environ.pop(k, None)
            if saved[k] is not None:
                os.environ[k] = saved[k]


def chosen_tiered_configs():
    keys = [k for k in os.environ.get("TIEMB_BENCH_TIERED", "").split(",") if k] or list(TIERED_CONFIGS)
    unknown = [k for k in keys if k not in TIERED_CONFIGS]
    if unknown:
        raise SystemExit(f"TIEMB_BENCH_TIERED: unknown {unknown}; choose from {list(TIERED_CONFIGS)}")
    return {k: TIERED_CONFIGS[k] for k in keys}


def tiered_case(layer, copy_bw, batches=40, h2d_bw=None, simulate_hits=True):
    rng = np.random.default_rng(7)
    pool = [[cp.asarray(zipf_ids(rng, layer.vocab, layer.batch * layer.nnz, 1.1)) for _ in range(layer.slots)]
            for _ in range(batches)]
    rows = {}
    sim_rates = {}
    engines = {}  # TierConfig arguments -> (engine, slots): shared by the variants of one config
    configs = [("resident", None, {}, False)] + list(chosen_tiered_configs().values())
    for label, tier_args, env, prefetch in configs:
        tiers = None if tier_args is None else tiemb.TierConfig(**tier_args)
        key = repr(sorted(tier_args.items())) if tier_args else "resident"
        fresh = key not in engines  # a cold engine: its hit rates compare with the simulator's
        if fresh:
            e = tiemb.GpuEmbeddingEngine(layer.batch, layer.slots, layer.nnz)
            engines[key] = (e, [tiemb.Slot(e.add_table(t, tiers), layer.combiner) for t in layer.tables])
        e, slots = engines[key]
        g = tiered_group(e, slots, env)
        preps = [g.prepare(ids, segment_ids=layer.segs) for ids in pool]
        k = [0]

        def step():
            if prefetch:  # the next batch's misses, on the background stream, while this one runs
                g.prefetch(pool[(k[0] + 1) % batches])
            preps[k[0] % batches].run()
            k[0] += 1

        for _ in range(batches // 2):  # reach the steady state
            step()
        g.synchronize()
        before = [e.stats(t) for t in range(layer.slots)]
        t = event_time_us(step, iters=batches, rounds=5, warmup=0)
        g.synchronize()
        after = [e.stats(t) for t in range(layer.slots)]
        hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before))
        uniq = sum(a["unique_ids"] - b["unique_ids"] for a, b in zip(after, before))
        calls = sum(a["batches"] - b["batches"] for a, b in zip(after[:1], before[:1])) or 1
        rows[label] = {"us": t, "hit_rate": hits / uniq if uniq else None,
                       "gbs": layer.bytes_moved() / (t * 1e-6) / 1e9,
                       # rows that crossed the host link per call (misses, after dedup)
                       "missed_bytes": (uniq - hits) * layer.dim * 4 / calls}
        if prefetch:  # prefetched rows crossed the link too, on the background stream
            rows[label]["note"] = "missed_bytes counts the lookups' misses only; prefetches moved rows too"
        if tiers is not None and simulate_hits and fresh and not prefetch:
            # What the advisor's CPU simulator expects on the same sequence of
            # batches (the warm-up, then the timed calls cycling the pool), all
            # tables together; once per policy: host reads do not change it.
            # (Variants sharing an engine find its cache warm: only its first
            # variant started cold as the simulator does.)
            if tiers.policy not in sim_rates:
                from tiemb.advise import TableInfo, simulate

                seq = [j % batches for j in range(k[0])]
                host_pool = [[cp.asnumpy(ids) for ids in b] for b in pool]
                sim_hits = sim_uniq = 0
                for s in range(layer.slots):
                    c = simulate(TableInfo(str(s), layer.vocab, layer.dim), [host_pool[i][s] for i in seq],
                                 tiers.cache_percentage, policy=tiers.policy)
                    sim_hits, sim_uniq = sim_hits + c["hits"], sim_uniq + c["unique_ids"]
                sim_rates[tiers.policy] = sim_hits / sim_uniq
            rows[label]["simulated_hit_rate_all_batches"] = sim_rates[tiers.policy]
            rows[label]["measured_hit_rate_all_batches"] = \
                sum(a["hits"] for a in after) / sum(a["unique_ids"] for a in after)
        print(json.dumps({"tiered config": label, **rows[label]}), flush=True)  # kept if a short call is cut off
        del preps, g
    res = rows["resident"]["us"]
    for r in rows.values():
        r["throughput_vs_resident"] = res / r["us"]
        if h2d_bw:
            r["floor_us"] = res + r["missed_bytes"] / (h2d_bw * 1e9) * 1e6
            r["over_floor"] = r["us"] / r["floor_us"]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true", help="smaller tables (a smoke run)")
    ap.add_argument("--tiered-only", action="store_true",
                    help="only the tiered cases (TIEMB_BENCH_TIERED picks their variants)")
    ap.add_argument("--no-sim", action="store_true", help="skip the advisor's CPU simulation of the hit rates")
    ap.add_argument("--tiered-dims", default="16,64", help="which tiered cases, by dim (default 16,64)")
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False
    dev = cp.cuda.runtime.getDeviceProperties(0)
    gpu = dev["name"].decode() if isinstance(dev["name"], bytes) else dev["name"]
    copy_bw = copy_bandwidth_gbs()
    h2d_bw = h2d_bandwidth_gbs()
    print(f"GPU: {gpu}; device-to-device copy: {copy_bw:.0f} GB/s (read + write); "
          f"host-to-device (pinned, 1 GiB cudaMemcpy): {h2d_bw:.1f} GB/s", flush=True)
    rng = np.random.default_rng(0)
    vocab = 100_000 if args.quick else 1_000_000
    results = {"gpu": gpu, "copy_gbs": copy_bw, "h2d_gbs": h2d_bw, "resident": [], "tiered": None}
    for nnz in (() if args.tiered_only else (1, 10)):
        layer = Layer(rng, slots=26, vocab=vocab, dim=16, batch=512, nnz=nnz, alpha=1.1)
        results["resident"].append(resident_case(f"W&D batch 512, 26 slots, dim 16, nnz {nnz}, Zipf(1.1)",
                                                 layer, copy_bw, have_torch))
        print(json.dumps(results["resident"][-1]), flush=True)
    big_batch = 8192 if args.quick else 65536
    if not args.tiered_only:
        layer = Layer(rng, slots=26, vocab=vocab, dim=64, batch=big_batch, nnz=4)
        results["resident"].append(resident_case(f"large batch {big_batch} x 26 slots, dim 64, nnz 4, uniform",
                                                 layer, copy_bw, have_torch))
        print(json.dumps(results["resident"][-1]), flush=True)
        del layer
    results["tiered"] = []
    dims = {int(d) for d in args.tiered_dims.split(",") if d}
    for dim, nnz, v in [c for c in ((16, 10, vocab), (64, 4, vocab // 2)) if c[0] in dims]:
        layer = Layer(rng, slots=26, vocab=v, dim=dim, batch=4096, nnz=nnz, alpha=1.1)
        results["tiered"].append({"case": f"batch 4096, 26 slots, dim {dim}, nnz {nnz}, {v}-row tables, "
                                          f"cache 0.2, Zipf(1.1)",
                                   **tiered_case(layer, copy_bw, h2d_bw=h2d_bw, simulate_hits=not args.no_sim)})
        print(json.dumps(results["tiered"][-1]), flush=True)
        del layer

    print(f"\n## GPU engine on {gpu} (copy {copy_bw:.0f} GB/s)")
    print("| case | tiemb us (launch / graph) | GB/s | % copy BW | gather ceiling GB/s | emb_bag eager | emb_bag graph | TF seq | speedup vs best peer |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results["resident"]:
        p = r.get("peers_us", {})
        print(f"| {r['case']} | {r['tiemb_us']:.1f} / {r.get('tiemb_graph_us', float('nan')):.1f} | "
              f"{r['tiemb_gbs']:.0f} | {r['pct_of_copy_bw']:.0f}% | {r.get('gather_ceiling_gbs', float('nan')):.0f} | "
              f"{p.get('embedding_bag eager', float('nan')):.1f} | "
              f"{p.get('embedding_bag CUDA graph', float('nan')):.1f} | {p.get('TF sequence (torch)', float('nan')):.1f} | "
              f"{r.get('speedup_vs_best_peer', float('nan')):.1f}x |")
    for t in results["tiered"]:
        print(f"\n{t['case']}")
        print(f"(host-to-device {h2d_bw:.1f} GB/s measured in this run; floor = resident + missed bytes / that)")
        print("| config | us per call | steady-state hit rate | simulated hit rate (advise) | throughput vs resident "
              "| missed MB per call | floor us | tiered / floor |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for k, v in t.items():
            if k == "case":
                continue
            hr = "-" if v["hit_rate"] is None else f"{100 * v['hit_rate']:.1f}%"
            sim = v.get("simulated_hit_rate_all_batches")
            sim = "-" if sim is None else (f"{100 * sim:.1f}% (measured over the same batches: "
                                           f"{100 * v['measured_hit_rate_all_batches']:.1f}%)")
            print(f"| {k} | {v['us']:.1f} | {hr} | {sim} | {100 * v['throughput_vs_resident']:.0f}% | "
                  f"{v['missed_bytes'] / 1e6:.2f} | {v.get('floor_us', float('nan')):.1f} | "
                  f"{v.get('over_floor', float('nan')):.2f}x |")
        for k, v in t.items():
            if k != "case" and v.get("note"):
                print(f"({k}: {v['note']})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
