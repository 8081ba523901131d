"""The cost of verifying table checksums (issue 11): a store of about 2 GB,
timed on this machine.

    python benchmarks/checksum_cost.py [--gb 2] [--dir /tmp/tiemb-checksum-store]

Prints: the CRC32C rate in memory (SSE4.2, one thread and every thread; the
portable code for comparison), what the engine adds when it opens the store
(the in-memory verification of everything it read), the first lookup's
whole open time (read + verify + engine build), and `tiemb check`'s time
(reads the files and verifies them).
"""

import argparse
import os
import shutil
import time

import numpy as np


def best(f, runs=3):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--dir", default="/tmp/tiemb-checksum-store")
    args = ap.parse_args()

    import tensorflow as tf

    from tiemb import _C, tf_ops
    from tiemb.bench.timing import machine_name

    dim, tables = 32, 4
    rows = int(args.gb * 2**30 / (tables * dim * 4))
    rng = np.random.default_rng(0)
    table = rng.standard_normal((rows, dim), dtype=np.float32)
    total = table.nbytes * tables
    print(f"machine: {machine_name()}; {os.cpu_count()} hardware threads")
    print(f"store: {tables} tables of {rows} x {dim} float32, {total / 1e9:.2f} GB")

    for label, kw in [("CRC32C SSE4.2, 1 thread", dict(threads=1)), ("CRC32C SSE4.2, all threads", dict(threads=0)),
                      ("CRC32C portable, 1 thread", dict(threads=1, portable=True))]:
        s = best(lambda: _C.block_crc32c(table, **kw), runs=3 if "SSE" in label else 1)
        print(f"{label}: {table.nbytes / 1e9 / s:.2f} GB/s ({s * tables:.3f} s for the {total / 1e9:.2f} GB store)")

    shutil.rmtree(args.dir, ignore_errors=True)
    tf_ops.write_store(args.dir, {f"t{k}.tiemb": table for k in range(tables)}, max_batch_size=64, slot_num=tables,
                       max_nnz=4)
    del table
    # The first lookup opens the store: reads every table, verifies it, builds the engine.
    names = [f"t{k}.tiemb" for k in range(tables)]
    ids = [tf.constant([1], tf.int64)] * tables
    t = time.perf_counter()
    tf_ops.lookup(args.dir, ids, [tf.constant([0], tf.int64)] * tables, tables=names, dims=[dim] * tables,
                  combiners=["sum"] * tables, modes=["plain"] * tables)
    open_s = time.perf_counter() - t
    print(f"first lookup (open: read + verify + engine build, page cache warm): {open_s:.2f} s")
    t = time.perf_counter()
    problems = _C.check_store(args.dir)
    check_s = time.perf_counter() - t
    assert not problems, problems
    print(f"tiemb check (read in 64 MiB chunks + verify, one thread): {check_s:.2f} s, "
          f"{total / 1e9 / check_s:.2f} GB/s")
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
