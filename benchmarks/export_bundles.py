"""Exports the bundles benchmarks/gpu_suite.sh serves on the GPU machine
(which has no TensorFlow). Run here, with TensorFlow:

    python benchmarks/export_bundles.py [--out benchmarks/bundles] [--towers small|reference]

Writes <out>/<model>_l<level>/ for W&D, DeepFM and DLRM (tiny vocabularies,
resident tables, levels 0 and 1, buckets 1,64,512,4096, with the baseline
where XLA compiles it), wd_tiered_l0 (W&D with a 20% GPU cache) and, at level 0, deepctr's DeepFM and WDL and a
tf.nn.embedding_lookup_sparse model over SparseTensor pieces. Everything is
seeded: the same command writes the same bundles. benchmarks/bundles/ is
git-ignored; it travels with the working tree to the GPU machine.
``--towers small`` (default) keeps the whole folder a few MB; ``reference``
uses the issue's dense towers (W&D 5 x 1024: ~17 MB per bundle, twice with
the baseline).
"""

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "tf"))   # bundle_models, deepctr_models

BUCKETS = [1, 64, 512, 4096]
# The tiny vocabularies' tables fit the GPU many times over: resident, as a
# deployment would keep them (the default 0.2 would make them tiered); one W&D
# bundle keeps the default tiers, so the tiered path is served and checked too.
RESIDENT = {"tiemb/cache_percentage": 1.0}
TIERED = {"tiemb/cache_percentage": 0.2}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(HERE, "bundles"))
    p.add_argument("--towers", choices=["small", "reference"], default="small")
    p.add_argument("--models", default="wd,deepfm,dlrm,deepctr_deepfm,deepctr_wdl,sparse")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import bundle_models
    from tiemb import serving
    from tiemb.bench import model_bench, models

    towers = model_bench.DEFAULT_KW if args.towers == "reference" else model_bench.SMALL_KW
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="tiemb-export-")
    wanted = args.models.split(",")
    try:
        for key in ("wd", "deepfm", "dlrm"):
            if key not in wanted:
                continue
            src = os.path.join(work, key)
            spec = models.BUILDERS[key](src, models.vocab_for("tiny"), seed=0, **towers[key])
            rng = np.random.default_rng(0)
            missing = 0.05 if key == "deepfm" else 0.0
            test = [models.random_batch(spec, 64, rng, missing=missing), models.real_batch(spec)]
            for level in (0, 1):
                export(serving, src, os.path.join(args.out, f"{key}_l{level}"), level, test)
            if key == "wd":
                # The tiered path (GPU cache over host memory) in the same program: served and checked too.
                export(serving, src, os.path.join(args.out, "wd_tiered_l0"), 0, test, TIERED)
        others = {"deepctr_deepfm": lambda d: bundle_models.deepctr("deepfm", d, 0),
                  "deepctr_wdl": lambda d: bundle_models.deepctr("wdl", d, 0),
                  "sparse": lambda d: bundle_models.sparse_model(d, 0)}
        for name, build in others.items():
            if name not in wanted:
                continue
            src = os.path.join(work, name)
            feeds = build(src)
            rng = np.random.default_rng(0)
            export(serving, src, os.path.join(args.out, f"{name}_l0"), 0, [feeds(64, rng), feeds(200, rng)])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"{args.out}: {total / 2**20:.1f} MB")


def export(serving, src, dst, level, test, config=None):
    meta = serving.export_bundle(src, dst, batch_sizes=BUCKETS, level=level, test_data=test, baseline=True,
                                 optimization_config=config or RESIDENT)
    base = meta["baseline"]
    print(f"{os.path.basename(dst)}: verified max rel diff {meta['verified']['max_rel_diff']:.2e}; baseline "
          + ("lowered" if "modules" in base else f"not lowered: {base['reason'][:160]}"))


if __name__ == "__main__":
    main()
