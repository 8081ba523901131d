"""Where a tiered lookup spends its time: every CUDA kernel, memset and copy
of 20 steady-state calls, recorded by torch.profiler (CUPTI sees all kernels
in the process, tiemb's included), for each tiered variant of issue 15
(TIEMB_PROFILE_VARIANTS). Also times the same calls' host side."""

import os
import sys
import time

import cupy as cp
import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

import tiemb
from tiemb.bench.data import zipf_ids

SLOTS, VOCAB, DIM, BATCH, NNZ = (int(v) for v in os.environ.get("TIEMB_PROFILE_SHAPE",
                                                                 "26,1000000,16,4096,10").split(","))

rng = np.random.default_rng(0)
tables = [rng.standard_normal((VOCAB, DIM), dtype=np.float32) for _ in range(SLOTS)]
segs = [cp.asarray(np.repeat(np.arange(BATCH, dtype=np.int64), NNZ)) for _ in range(SLOTS)]
pool = [[cp.asarray(zipf_ids(rng, VOCAB, BATCH * NNZ, 1.1)) for _ in range(SLOTS)] for _ in range(40)]
for threshold in (0.0, 1.0, 0.95):  # all background, all in-stream, the default
    e = tiemb.GpuEmbeddingEngine(BATCH, SLOTS, NNZ)
    g = e.group([tiemb.Slot(e.add_table(t, tiemb.TierConfig(0.2, hit_rate_threshold=threshold)), "mean")
                 for t in tables])
    preps = [g.prepare(ids, segment_ids=segs) for ids in pool]
    for p in preps[:20]:
        p.run()
    g.synchronize()
    t0 = time.perf_counter()
    for p in preps[20:]:
        p.run()
    t1 = time.perf_counter()
    g.synchronize()
    t2 = time.perf_counter()
    print(f"threshold {threshold}: host time to issue 20 calls: {(t1 - t0) * 1e6 / 20:.1f} us/call; "
          f"until done: {(t2 - t0) * 1e6 / 20:.1f} us/call")
# The variants of issue 15 (same tables and traffic, a group each, the
# default threshold): TIEMB_PROFILE_VARIANTS=key,... from gpu_bench's
# TIERED_CONFIGS picks some (default: the path today, the listed ones and the
# lane probe).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpu_bench import TIERED_CONFIGS, tiered_group  # noqa: E402

DEFAULT_VARIANTS = "default,list_probe,list_reads,list_both,list_both_prefetch,lane_probe"
keys = [k for k in os.environ.get("TIEMB_PROFILE_VARIANTS", DEFAULT_VARIANTS).split(",") if k]
slots = g.slots
del preps, g
for key in keys:
    label, tier_args, env, prefetch = TIERED_CONFIGS[key]
    g = tiered_group(e, slots, env)
    preps = [g.prepare(ids, segment_ids=segs) for ids in pool]

    def calls(lo, hi):
        for k in range(lo, hi):
            if prefetch:
                g.prefetch(pool[(k + 1) % len(pool)])
            preps[k].run()

    calls(0, 20)
    g.synchronize()
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        calls(20, 40)
        g.synchronize()
    print(f"\n== {key}: {label} (env {env or 'none'}), 20 calls")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))
    if os.environ.get("OUT"):
        prof.export_chrome_trace(os.path.join(os.environ["OUT"], f"trace_{key}.json"))
    del preps, g
