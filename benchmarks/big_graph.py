"""A model whose tables alone exceed the 2 GB GraphDef limit, end to end:
build, save, optimize, serve the optimized copy from a fresh process, compare.

    python benchmarks/big_graph.py [ROWS]   (default 36M rows x 16 = 2.3 GB of float32)

Too heavy for CI (it writes ~7 GB); RESULTS.md records a run.
"""

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf

from tiemb.rewrite import rewrite_saved_model


def main(rows):
    work = tempfile.mkdtemp(prefix="tiemb-big-")
    rng = np.random.default_rng(0)

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.big = tf.Variable(tf.random.stateless_uniform((rows, 16), seed=(1, 2)))
            self.small = tf.Variable(rng.standard_normal((1000, 16)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="a"),
                                      tf.TensorSpec([None], tf.int64, name="b")])
        def serve(self, a, b):
            return {"y": tf.reduce_sum(tf.gather(self.big, a) * tf.gather(self.small, b), 1)}

    t0 = time.perf_counter()
    m = M()
    src, dst = os.path.join(work, "src"), os.path.join(work, "opt")
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    print(f"tables {m.big.numpy().nbytes / 2**30:.2f} GiB; saved in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    report = rewrite_saved_model(src, dst, max_batch_size=4096, max_nnz=1)
    print(f"optimized in {time.perf_counter() - t0:.0f} s: {report.replaced} lookups replaced; "
          f"saved_model.pb {os.path.getsize(os.path.join(dst, 'saved_model.pb')) / 2**20:.1f} MiB")
    a = rng.integers(0, rows, 4096)
    b = rng.integers(0, 1000, 4096)
    want = m.serve(tf.constant(a), tf.constant(b))["y"].numpy()
    np.savez(os.path.join(work, "in.npz"), a=a, b=b)
    code = ("import sys, numpy as np, tensorflow as tf, tiemb\n"
            "f = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
            "x = np.load(sys.argv[2])\n"
            "np.save(sys.argv[3], f(a=tf.constant(x['a']), b=tf.constant(x['b']))['y'].numpy())\n")
    out = os.path.join(work, "out.npy")
    subprocess.run([sys.executable, "-c", code, dst, os.path.join(work, "in.npz"), out], check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    got = np.load(out)
    print(f"fresh-process outputs vs original: max abs diff {np.max(np.abs(got - want)):.3g} over {len(got)} rows")
    subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 36_000_000)
