"""What ``model(feeds)`` costs per request beyond the compiled program it
runs: checks, padding, array handovers, output slicing. Runs wherever jax
does (``--device cpu`` with jax's CPU build; ``gpu`` with cupy feeds on the
device, no host copies).

For each bundle of --bundles (benchmarks/export_bundles.py writes them) and
each batch of --batches, two timings interleaved call by call:

* call ms: ``model(feeds)`` to its outputs being ready (on the GPU: feeds
  already on the device, outputs synchronised);
* program ms: the same bucket's compiled program on arguments already
  prepared (``model.program_args``), to its outputs being ready;
* overhead ms = call - program: the Python per request.

Medians of --runs pairs after a warm-up. ``--dlpack`` (CPU): the feeds
wrapped in an object that offers only DLPack (as cupy arrays are not numpy),
so the call takes the device-array path it takes on the GPU.

    python benchmarks/bundle_call_overhead.py [--device cpu|gpu] [--bundles DIR] [--batches 1,64,512]
        [--runs 200] [--models wd_l0,...] [--dlpack] [--json OUT]
"""

import argparse
import glob
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def resized(feeds, inputs, batch):
    """The recorded feeds' rows repeated to ``batch`` rows; None for bundles
    fed SparseTensor pieces (their batch is not the feeds' first dimension)."""
    out = {}
    for name, a in feeds.items():
        if not inputs[name]["padded"]:
            return None
        out[name] = np.resize(a, (batch,) + a.shape[1:]) if a.shape[0] != batch else a
    return out


class DlpackOnly:
    """A host array seen only through DLPack, dtype and shape (``__array__``
    for the padding), as the runtime sees a device array."""

    def __init__(self, a):
        self._a, self.dtype, self.shape, self.ndim = a, a.dtype, a.shape, a.ndim

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        return self._a


def machine(device: str) -> str:
    if device == "gpu":
        import cupy as cp

        return cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundles", default=os.path.join(HERE, "bundles"))
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--batches", default="1,64,512")
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--models", default="", help="comma-separated bundle names (default: every bundle)")
    p.add_argument("--dlpack", action="store_true", help="CPU: feeds offered through DLPack only")
    p.add_argument("--json")
    args = p.parse_args(argv)
    from tiemb import serving
    from tiemb.serving import xla

    if args.device == "gpu":
        import cupy as xp

        sync = xp.cuda.runtime.deviceSynchronize
    else:
        xp, sync = np, (lambda: None)
    dirs = sorted(os.path.dirname(m) for m in glob.glob(os.path.join(args.bundles, "*", "bundle.json")))
    if args.models:
        dirs = [d for d in dirs if os.path.basename(d) in args.models.split(",")]
    if not dirs:
        print(f"no bundles under {args.bundles}: run benchmarks/export_bundles.py where TensorFlow is")
        return 1
    print(f"device: {args.device} ({machine(args.device)}); feeds: "
          f"{'cupy' if args.device == 'gpu' else 'DLPack only' if args.dlpack else 'numpy'}; "
          f"medians of {args.runs} interleaved pairs")
    head = "| model | batch | call ms | program ms | overhead ms | overhead / call |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    rows = []
    for d in dirs:
        name = os.path.basename(d)
        model = serving.load(d, device=args.device)
        if d == dirs[0]:     # whether this jax takes the runtime's lean paths or falls back to the public ones
            fast = all(f._fast is not None for f in model._feeders.values())
            lean = model._device_feeder._import is not None
            paths = (f"numpy feeds: {'precomputed transfer' if fast else 'jax.device_put (fallback)'}; device "
                     f"feeds: {'lean DLPack import' if lean else 'jax.dlpack.from_dlpack (fallback)'}")
        feeds0 = model.test_batches()[0][0]
        for batch in (int(b) for b in args.batches.split(",")):
            feeds = resized(feeds0, model.inputs, batch)
            if feeds is None or batch > model.buckets[-1]:
                continue
            feeds = {k: DlpackOnly(v) if args.dlpack and xp is np else xp.asarray(v) for k, v in feeds.items()}
            bucket, prog_args = model.program_args(feeds)

            def call():
                model(feeds)        # numpy out on the CPU (ready); cupy out on the GPU: sync() waits
                sync()

            def program():
                xla.block(model.run_program(bucket, prog_args))
                sync()

            for _ in range(10):
                call()
                program()
            t_call, t_prog = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                call()
                t1 = time.perf_counter()
                program()
                t2 = time.perf_counter()
                t_call.append((t1 - t0) * 1e3)
                t_prog.append((t2 - t1) * 1e3)
            c, g = statistics.median(t_call), statistics.median(t_prog)
            over = statistics.median(a - b for a, b in zip(t_call, t_prog))
            rows.append({"model": name, "batch": batch, "call_ms": c, "program_ms": g, "overhead_ms": over})
            print(f"| {name} | {batch} | {c:.3f} | {g:.3f} | {over:.3f} | {over / c:.0%} |", flush=True)
    print(paths)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "machine": machine(args.device), "dlpack": args.dlpack, "paths": paths,
                       "rows": rows},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
