"""pytest-benchmark suite: the reference models, original vs optimized
SavedModel (level 0), batch 512, on identical inputs.

Run: pytest benchmarks/ --benchmark-only   (the ratios are printed at the end)
"""

import os
import tempfile

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")

from tiemb import backends, tf_ops  # noqa: E402
from tiemb.bench import model_bench, models  # noqa: E402
from tiemb.rewrite import rewrite_saved_model  # noqa: E402

_pairs = {}


def pair_for(name):
    """(original fn, optimized fn, feeds) for a reference model, built once."""
    if name not in _pairs:
        tf_ops.load()
        work = tempfile.mkdtemp(prefix="tiemb-bench-")
        src, dst = os.path.join(work, name), os.path.join(work, name + "_opt")
        spec = models.BUILDERS[name](src, models.vocab_for("small"), **model_bench.DEFAULT_KW[name])
        feeds = {k: tf.constant(v) for k, v in models.random_batch(spec, 512, np.random.default_rng(0)).items()}
        rewrite_saved_model(src, dst, max_batch_size=512, max_nnz=models.GENRES_LEN)
        a, b = tf.saved_model.load(src), tf.saved_model.load(dst)
        fa, fb = a.signatures["serving_default"], b.signatures["serving_default"]
        diff = backends.relative_difference({k: v.numpy() for k, v in fa(**feeds).items()},
                                            {k: v.numpy() for k, v in fb(**feeds).items()})[1]
        assert diff <= backends.TOLERANCE[0]
        _pairs[name] = (a, b, fa, fb, feeds)
    return _pairs[name]


@pytest.mark.parametrize("name", ["wd", "deepfm", "dlrm"])
@pytest.mark.parametrize("side", ["tf", "tiemb"])
def test_reference_model(benchmark, record_median, side, name):
    _, _, fa, fb, feeds = pair_for(name)
    fn = fa if side == "tf" else fb
    benchmark.group = f"{name}, batch 512, level 0, whole SavedModel"
    benchmark.pedantic(lambda: fn(**feeds), rounds=30, warmup_rounds=5)
    record_median(f"{name} whole model", side, benchmark)
