"""Issue 4's benchmark: original vs optimized SavedModel for the Keras
Wide&Deep (26 x dim 16, 5 x 1024 tower), the feature-column DeepFM and DLRM,
batch 512, levels 0 and 1, side by side in one process, with a per-op profile
of both graphs' embedding parts and the op's traced time beside the engine's.

    python benchmarks/tf_models.py [--runs 50] [--scale small] [--models wd,deepfm]
"""

import argparse
import json

from tiemb.bench import model_bench as mb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--scale", default="small")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--models", default="wd,deepfm,dlrm")
    ap.add_argument("--json")
    a = ap.parse_args()
    rows = []
    for name in a.models.split(","):
        rows += mb.bench_model(name, batches=[a.batch], levels=[0, 1], scale=a.scale, runs=a.runs, profile_ops=True)
    print(f"machine: {mb.machine_name()}")
    print(mb.format_table(rows))
    for r in rows:
        print(f"{r.model} level {r.level}: TiembLookup traced {r.op_traced_ms:.3f} ms, engine alone "
              f"{r.engine_ms:.3f} ms ({r.op_over_engine:.2f}x); {r.fused_outputs} op outputs for "
              f"{r.lookups_fused} lookups")
    for r in rows:
        for side in ("original", "fused"):
            span, ops, _ = r.profile[side]
            print(f"{r.model} level {r.level} embedding part, {side}: {span:.3f} ms traced span; " +
                  ", ".join(f"{k} {ms:.3f} ms ({n} nodes)" for k, ms, n in ops))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([r.as_dict() for r in rows], f, indent=1)


if __name__ == "__main__":
    main()
