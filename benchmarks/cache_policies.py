"""Eviction/admission policies of the GPU cache compared on the same traffic,
with the advisor's CPU simulator (csrc/core/cache_sim.h): the engine's LRU,
LFU, and LRU behind a TinyLFU-style admission filter (issue 15's lever).

    python benchmarks/cache_policies.py [--json OUT] [--quick]

Cases: the two tiered cases of gpu_bench.py (one table each: 1M rows,
Zipf(1.1), batch 4096 x nnz 10; 500k rows, batch 4096 x nnz 4; cache 0.2)
and the NVE-shaped one (power law 1.05, batch 256 x 1024, cache 0.1) on a
smaller table (the hit rate depends on the table's rows; --rows to change).
Hit rates over all batches after a warm-up of as many batches (steady state).
"""

import argparse
import json
import sys
import time

import numpy as np

from tiemb.advise import TableInfo, simulate

POLICIES = ("lru", "lfu", "lru_admit")


def powerlaw(rows, alpha, seed=1):
    p = np.arange(1, rows + 1, dtype=np.float64) ** -alpha
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    perm = np.random.default_rng(seed).permutation(rows)
    return lambda rng, n: perm[np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), rows - 1)]


def steady(table, batches, pct, policy):
    """Hit rate of the second half of the batches (the first half warms the cache)."""
    return simulate(table, batches, pct, policy=policy, warmup=len(batches) // 2)["hit_rate"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nve-rows", type=int, default=4_000_000, help="rows of the NVE-shaped table (4M)")
    args = ap.parse_args()
    n_batches = 20 if args.quick else 60
    cases = [("1M rows, Zipf(1.1), 4096 x 10 ids, cache 0.2", 1_000_000, 1.1, 40960, 0.2),
             ("500k rows, Zipf(1.1), 4096 x 4 ids, cache 0.2", 500_000, 1.1, 16384, 0.2),
             (f"NVE-shaped: {args.nve_rows} rows, power law 1.05, 256 x 1024 ids, cache 0.1", args.nve_rows, 1.05,
              262144, 0.1)]
    out = []
    print("| case | " + " | ".join(POLICIES) + " |")
    print("| --- |" + " --- |" * len(POLICIES))
    for name, rows, alpha, ids, pct in cases:
        rng = np.random.default_rng(0)
        draw = powerlaw(rows, alpha)
        batches = [draw(rng, ids) for _ in range(n_batches)]
        t = TableInfo("t", rows, 16)
        t0 = time.time()
        rates = {p: steady(t, batches, pct, p) for p in POLICIES}
        out.append({"case": name, "rates": rates, "seconds": time.time() - t0})
        print(f"| {name} | " + " | ".join(f"{100 * rates[p]:.1f}%" for p in POLICIES) + " |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
