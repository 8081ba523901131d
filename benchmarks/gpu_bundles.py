"""Serves the bundles of benchmarks/bundles/ (exported on a machine with
TensorFlow by export_bundles.py) on this GPU, and prints one table row per
model, level and batch:

* tiemb ms: the whole bundle call (feeds already on the GPU: one XLA program
  per bucket, the lookups on the GPU engine as its custom call, then the
  dense module), to the GPU finishing;
* floor ms: the dense module alone on precomputed lookup outputs (same XLA,
  same GPU): what the model would take if lookups were free;
* baseline ms: the original model's whole graph compiled by XLA on this GPU,
  where XLA could compile it (else "-", and the reason below the table);
* max rel diff: the bundle's outputs vs TensorFlow's CPU outputs recorded at export;
* cmdbuf call / program ms (GPU): the same bundle loaded with
  ``command_buffer=True`` (the lookups' custom call declared command-buffer
  compatible, so XLA may keep the whole program in one CUDA graph), timed in
  the same interleaved rounds; "-" where it cannot be (tiered tables: the
  reason is printed below the table), and cmdbuf max rel diff for it.

Medians of --runs calls after a warm-up, the three timed alternately.

    python benchmarks/gpu_bundles.py [--bundles DIR] [--runs 50] [--json OUT]
"""

import argparse
import glob
import json
import os
import statistics
import sys
import time

import numpy as np


def timed(fns, runs, sync, warmup=5):
    """Median ms of each callable, interleaved (a, b, c, a, b, c, ...)."""
    for _ in range(warmup):
        for f in fns:
            f()
            sync()
    samples = [[] for _ in fns]
    for _ in range(runs):
        for k, f in enumerate(fns):
            t0 = time.perf_counter()
            f()
            sync()
            samples[k].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(s) for s in samples]


def resized(feeds, inputs, batch):
    """The recorded feeds' rows repeated to ``batch`` rows (padded inputs only)."""
    out = {}
    for name, a in feeds.items():
        if not inputs[name]["padded"]:
            return None            # SparseTensor pieces: only the recorded batches
        out[name] = np.resize(a, (batch,) + a.shape[1:]) if a.shape[0] != batch else a
    return out


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--bundles", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundles"))
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--json")
    p.add_argument("--device", choices=["gpu", "cpu"], default="gpu",
                   help="cpu: the same table on the CPU engine and XLA's CPU backend (a check of this script)")
    args = p.parse_args(argv)
    if args.device == "gpu":
        import cupy as cp

        sync = cp.cuda.runtime.deviceSynchronize
        print(f"GPU: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    else:
        cp, sync = np, (lambda: None)

    from tiemb import serving
    from tiemb.backends import relative_difference
    from tiemb.serving import xla
    from tiemb.serving.runtime import Baseline

    dirs = sorted(os.path.dirname(m) for m in glob.glob(os.path.join(args.bundles, "*", "bundle.json")))
    if not dirs:
        print(f"no bundles under {args.bundles}: run benchmarks/export_bundles.py where TensorFlow is")
        return 1
    # "call": model(feeds) from Python with device feeds (checks, padding, DLPack handovers of every
    # input and output); "program": the same compiled program on arguments already on the device,
    # as the floor (the dense module alone) and the baseline program are timed.
    head = ("| model | level | batch | tiemb call ms | tiemb program ms | floor ms | program / floor | "
            "baseline call ms | baseline program ms | speedup (call) | speedup (program) | QPS tiemb call | "
            "max rel diff vs TF CPU | cmdbuf call ms | cmdbuf program ms | cmdbuf program / floor | "
            "cmdbuf max rel diff |")
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    rows, reasons, cmdbuf_reasons = [], {}, {}
    for d in dirs:
        name = os.path.basename(d)
        model = serving.load(d, device=args.device)
        tests = model.test_batches()
        diff = max(relative_difference(want, model(feeds))[1] for feeds, want in tests)
        cb, cb_diff = None, None
        if args.device == "gpu":
            try:
                cb = serving.load(d, device="gpu", command_buffer=True)
                cb_diff = max(relative_difference(want, cb(feeds))[1] for feeds, want in tests)
            except ValueError as e:
                cmdbuf_reasons[name] = str(e)
        base = None
        if "modules" in (model.meta.get("baseline") or {}):
            base = Baseline(d, device=args.device)
        else:
            reasons[name] = (model.meta.get("baseline") or {}).get("reason", "not exported")
        for batch in model.buckets:
            feeds = resized(tests[0][0], model.inputs, batch)
            if feeds is None:
                feeds = tests[0][0]
                if batch != model.buckets[0]:
                    continue
            dev = {k: cp.asarray(v) for k, v in feeds.items()}
            n = model._check(dev)
            # The floor's inputs: the lookups' outputs, computed once by the bundle's own lookup program.
            bucket, dense_args = model.floor_args(dev)
            _, prog_args = model.program_args(dev)
            fns = [lambda: model(dev), lambda: xla.block(model.run_program(bucket, prog_args)),
                   lambda: xla.block(model.dense_only(dense_args, bucket))]
            has_base = base is not None and n == bucket
            if has_base:
                base_args = base.args(dev)
                fns += [lambda: xla.block(base(dev)), lambda: xla.block(base.run(*base_args))]
            if cb is not None:
                _, cb_args = cb.program_args(dev)
                fns += [lambda: cb(dev), lambda: xla.block(cb.run_program(bucket, cb_args))]
            ms = timed(fns, args.runs, sync)
            t, prog, floor = ms[0], ms[1], ms[2]
            b_ms, b_prog = (ms[3], ms[4]) if has_base else (None, None)
            c_ms, c_prog = (ms[-2], ms[-1]) if cb is not None else (None, None)
            row = {"model": name, "level": model.meta["level"], "batch": n, "tiemb_ms": t, "program_ms": prog,
                   "floor_ms": floor, "baseline_ms": b_ms, "baseline_program_ms": b_prog, "max_rel_diff": diff,
                   "cmdbuf_ms": c_ms, "cmdbuf_program_ms": c_prog, "cmdbuf_max_rel_diff": cb_diff}
            rows.append(row)
            print(f"| {name} | {row['level']} | {n} | {t:.3f} | {prog:.3f} | {floor:.3f} | {prog / floor:.2f} | "
                  + (f"{b_ms:.3f} | {b_prog:.3f} | {b_ms / t:.2f}x | {b_prog / prog:.2f}x" if b_ms else "- | - | - | -")
                  + f" | {n * 1e3 / t:,.0f} | {diff:.1e} | "
                  + (f"{c_ms:.3f} | {c_prog:.3f} | {c_prog / floor:.2f} | {cb_diff:.1e} |" if c_ms
                     else "- | - | - | - |"))
    for name, why in reasons.items():
        print(f"baseline of {name}: {why[:300]}")
    for name, why in cmdbuf_reasons.items():
        print(f"command buffer of {name}: {why[:300]}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "baseline_reasons": reasons, "cmdbuf_reasons": cmdbuf_reasons}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
