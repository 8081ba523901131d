"""Pooled lookups over padded id matrices on the CPU, before and after their
fusion (issue 18; issue 14's DeepFM conversion), side by side in one process.

1. NVIDIA-style Wide&Deep feature layer (13 one-hot + 3 multi-hot features of
   hotness 3, tiemb/bench/multihot.py; the gather reads max(ids, 0) so that
   TensorFlow runs it on a CPU): the embedding part (the layer's output) as
   TF1 session runs: TensorFlow, tiemb with the row gathers fused and the
   masking/pooling left to TensorFlow ("gathers only": what tiemb did
   before), tiemb with the pooled slots.
2. The feature-column DeepFM: the whole model (original, optimized with the
   dense-to-sparse conversions left to TensorFlow = "before", optimized with
   them in the op = "after") in one alternating run; then
   tiemb.bench.model_bench for each (whole model, embedding part, floor).

"Before" switches the pooled pass off in this process only (the rewriter
imports it at call time); everything else is the same build.

    python benchmarks/pooled_bench.py [--batch 64,512] [--runs 30] [--skip-deepfm]
"""

import argparse
import os
import sys
import tempfile
from contextlib import contextmanager

import numpy as np


@contextmanager
def pooled_pass_off():
    from tiemb.rewrite import driver

    real = driver.PASSES
    driver.PASSES = tuple(p for p in real if p.option != "pooled")
    try:
        yield
    finally:
        driver.PASSES = real


def multihot_case(batches, runs, seed=0):
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tiemb import tf_ops
    from tiemb.bench import model_bench
    from tiemb.bench.multihot import feature_layer, padded_ids
    from tiemb.rewrite import rewrite_sparse_lookups

    tf_ops.load()
    rng = np.random.default_rng(seed)
    one_hot = [int(v) for v in rng.integers(1000, 100_000, 13)]
    multi = [5000, 20_000, 300]
    hot, dim = 3, 16
    layer = feature_layer(one_hot + multi, [dim] * 16, ["sum"] * 13 + ["mean", "sum", "mean"], clip=True)
    sig = [tf.TensorSpec([None, 1], tf.int64)] * 13 + [tf.TensorSpec([None, hot], tf.int64)] * 3
    fn = tf.function(lambda *xs: layer(list(xs)), input_signature=sig).get_concrete_function()
    cf = convert_variables_to_constants_v2(fn)
    gd = cf.graph.as_graph_def()
    inputs, output = [t.name for t in cf.inputs], cf.outputs[0].name
    work = tempfile.mkdtemp(prefix="tiemb-pooled-")
    largest = max(batches)
    with pooled_pass_off():
        gathers_gd, r0 = rewrite_sparse_lookups(gd, os.path.join(work, "g"), max_batch_size=largest, max_nnz=hot)
    pooled_gd, r1 = rewrite_sparse_lookups(gd, os.path.join(work, "p"), max_batch_size=largest, max_nnz=hot)
    print(f"multi-hot W&D layer: gathers only: {r0.replaced} fused, {sum(n.op != 'Const' for n in gathers_gd.node)} "
          f"non-Const nodes; pooled: {r1.replaced} fused ({sum(e['id_width'] >= 0 for e in r1.lookups)} pooled "
          f"slots), {sum(n.op != 'Const' for n in pooled_gd.node)} non-Const nodes; original "
          f"{sum(n.op != 'Const' for n in gd.node)}")
    rows = []
    for b in batches:
        feeds = {name: (rng.integers(0, v, (b, 1)) if k < 13 else padded_ids(rng, v, b, hot))
                 for k, (name, v) in enumerate(zip(inputs, one_hot + multi))}
        fns = [model_bench.session_runner(tf, g, feeds, [output]) for g in (gd, gathers_gd, pooled_gd)]
        want, *gots = [f()[0] for f in fns]
        diff = max(float(np.max(np.abs(g - want))) for g in gots)
        t = model_bench.alternate(fns, runs)
        rows.append((b, *[x.median_ms for x in t], diff))
    print("\n| batch | TF ms | tiemb gathers only ms | tiemb pooled ms | pooled vs TF | pooled vs gathers only "
          "| max abs diff |\n| --- | --- | --- | --- | --- | --- | --- |")
    for b, a, g, p, d in rows:
        print(f"| {b} | {a:.3f} | {g:.3f} | {p:.3f} | {a / p:.2f}x | {g / p:.2f}x | {d:.1e} |")


def deepfm_case(batches, runs):
    from tiemb.bench import model_bench

    with pooled_pass_off():
        before = model_bench.bench_model("deepfm", batches=batches, levels=[0], runs=runs, progress=lambda s: None)
    after = model_bench.bench_model("deepfm", batches=batches, levels=[0], runs=runs, progress=lambda s: None)
    print("\n| DeepFM batch | conversion | TF ms | tiemb ms | speedup | embedding TF ms | embedding fused ms "
          "| floor ms | tiemb / floor |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, rows in (("in TensorFlow (before)", before), ("in the op (after)", after)):
        for r in rows:
            print(f"| {r.batch} | {label} | {r.whole_original.median_ms:.2f} | {r.whole_optimized.median_ms:.2f} | "
                  f"{r.whole_original.median_ms / r.whole_optimized.median_ms:.2f}x | "
                  f"{r.embedding_original.median_ms:.3f} | {r.embedding_fused.median_ms:.3f} | "
                  f"{r.floor.median_ms:.2f} | {r.whole_optimized.median_ms / r.floor.median_ms:.2f} |")


def deepfm_side_by_side(batches, runs, seed=0):
    """The DeepFM whole model: original, optimized before and after, in one
    alternating run (same machine state for the three)."""
    import tensorflow as tf

    from tiemb import tf_ops
    from tiemb.bench import model_bench, models
    from tiemb.rewrite import rewrite_saved_model

    tf_ops.load()
    work = tempfile.mkdtemp(prefix="tiemb-pooled-deepfm-")
    src = os.path.join(work, "deepfm")
    spec = models.deepfm(src, models.vocab_for("small"), **dict(model_bench.DEFAULT_KW["deepfm"], seed=seed))
    rng = np.random.default_rng(seed)
    with pooled_pass_off():
        rewrite_saved_model(src, os.path.join(work, "before"), max_batch_size=max(batches), max_nnz=models.GENRES_LEN)
    rewrite_saved_model(src, os.path.join(work, "after"), max_batch_size=max(batches), max_nnz=models.GENRES_LEN)
    loaded = [tf.saved_model.load(os.path.join(work, d)) for d in ("deepfm", "before", "after")]
    fns = [m.signatures["serving_default"] for m in loaded]
    print("\n| DeepFM batch | TF ms | tiemb, conversion in TF ms | tiemb, conversion in the op ms | after vs before "
          "| max abs diff |\n| --- | --- | --- | --- | --- | --- |")
    for b in batches:
        t = {k: tf.constant(v) for k, v in models.random_batch(spec, b, rng, missing=0.05).items()}
        outs = [f(**t)["prob"].numpy() for f in fns]
        diff = max(float(np.max(np.abs(o - outs[0]))) for o in outs[1:])
        a, x, y = model_bench.alternate([lambda f=f: f(**t) for f in fns], runs)
        print(f"| {b} | {a.median_ms:.2f} | {x.median_ms:.2f} | {y.median_ms:.2f} | {x.median_ms / y.median_ms:.2f}x "
              f"| {diff:.1e} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", default="64,512")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--skip-deepfm", action="store_true")
    args = p.parse_args(argv)
    from tiemb.bench.timing import machine_name

    batches = [int(b) for b in args.batch.split(",")]
    print(f"machine: {machine_name()}; medians of {args.runs} alternating runs")
    multihot_case(batches, args.runs)
    if not args.skip_deepfm:
        deepfm_side_by_side(batches, args.runs)
        deepfm_case(batches, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
