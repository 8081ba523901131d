"""tiemb/max_batch_size, slot_num and max_nnz mean what a serving engineer means
(samples per call, features, ids per sample), on models written the way
other people write them, configured with seed 000's seven parameter_map lines
filled as a user reads them; too-small sizes and serving-time overflows are
errors that name the parameter, the limit and the value."""

import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from serving import assert_same_outputs, serve_fresh, serve_here  # noqa: E402
from seed import seed_config  # noqa: E402
from tiemb import tf_ops  # noqa: E402
from tiemb.bench import models  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

VOCAB = models.vocab_for("tiny")


def optimize(src, dst, shapes, cfg, test_data=None):
    return tiemb.optimize(src, 0, 1, shapes, test_data=test_data, save_path=dst, optimization_config=cfg, runs=2)


# ----------------------------------------------------------------- deepctr

def deepctr_model(kind, path, seed):
    pytest.importorskip("deepctr", reason="deepctr is in requirements-test.txt")
    script = os.path.join(os.path.dirname(__file__), "deepctr_models.py")
    proc = subprocess.run([sys.executable, script, kind, path, str(seed % 1000)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]


def deepctr_batch(rng, n):
    feeds = {f"C{i}": rng.integers(0, v, (n, 1)).astype(np.int32) for i, v in enumerate([97, 1000, 50, 300, 120, 60])}
    genres = np.zeros((n, 6), np.int32)          # deepctr pads with 0
    for r, c in enumerate(rng.integers(0, 7, n)):
        genres[r, :c] = rng.integers(1, 25, c)
    feeds["genres"] = genres
    feeds.update({f"I{i}": rng.random((n, 1), dtype=np.float32) for i in range(3)})
    return feeds


@pytest.mark.parametrize("kind", ["deepfm", "wdl"])
def test_deepctr_with_seed_config(kind, tmp_path, seed):
    """6 sparse features and a VarLenSparseFeat of length 6: slot_num = 7 features, max_nnz = 6, whatever the
    number of tables each feature feeds (DeepFM: linear + embedding, 14 lookups)."""
    src, dst = str(tmp_path / kind), str(tmp_path / "opt")
    deepctr_model(kind, src, seed)
    rng = np.random.default_rng(seed)
    data = [deepctr_batch(rng, 64), deepctr_batch(rng, 5)]
    shapes = [f"C{i}:int32(64*1)" for i in range(6)] + ["genres:int32(64*6)"] + [f"I{i}:float(64*1)" for i in range(3)]
    _, report = optimize(src, dst, "\n".join(shapes), seed_config(64, 7, 6), test_data=data)
    r = report.to_dict()
    assert r["rewrite"]["replaced"] == {"deepfm": 14, "wdl": 13}[kind] and r["rewrite"]["features"] == 7
    assert r["config"]["inferred"] == {} and r["config"]["values"]["tiemb/slot_num"] == 7
    batches = data + [deepctr_batch(rng, 64)]
    assert_same_outputs(serve_here(src, batches), serve_fresh(dst, batches), what=kind)


# ----------------------------------------------------------------- SparseTensor pieces

class SparseModel(tf.Module):
    """Takes a SparseTensor as its three pieces (and per-id weights), as a
    tf.Example-parsing server hands them over; every combiner of both lookups."""

    def __init__(self, rng):
        super().__init__()
        self.a = tf.Variable(rng.standard_normal((300, 8)).astype(np.float32))
        self.b = tf.Variable(rng.standard_normal((300, 4)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64, name="indices"),
                                  tf.TensorSpec([None], tf.int64, name="values"),
                                  tf.TensorSpec([2], tf.int64, name="dense_shape"),
                                  tf.TensorSpec([None], tf.float32, name="weights")])
    def serve(self, indices, values, dense_shape, weights):
        sp = tf.SparseTensor(indices, values, dense_shape)
        sw = tf.SparseTensor(indices, weights, dense_shape)
        out = {c: tf.nn.embedding_lookup_sparse(self.a, sp, None, combiner=c) for c in ("sum", "mean", "sqrtn")}
        out["weighted"] = tf.nn.embedding_lookup_sparse(self.b, sp, sw, combiner="mean")
        out["safe"] = tf.nn.safe_embedding_lookup_sparse(self.b, sp, sw, combiner="sqrtn")
        return out


def sparse_batch(rng, batch, widest):
    counts = rng.integers(1, widest + 1, batch)
    counts[rng.integers(batch)] = widest
    seg = np.repeat(np.arange(batch), counts)
    cols = np.concatenate([np.arange(c) for c in counts])
    return {"indices": np.stack([seg, cols], 1).astype(np.int64), "values": rng.integers(0, 300, len(seg)),
            "dense_shape": np.array([batch, widest], np.int64), "weights": rng.random(len(seg), dtype=np.float32)}


@pytest.fixture(scope="module")
def sparse_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("sparse") / "m")
    m = SparseModel(np.random.default_rng(7))
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})
    return path


def test_sparse_pieces_batch_is_dense_shape_not_ids(sparse_model, tmp_path, seed):
    """Batch 512 with ~1800 ids: max_batch_size = 512 (dense_shape[0]), max_nnz = the widest row, slot_num = 1
    (five lookups of two tables, one id input)."""
    rng = np.random.default_rng(seed)
    data = [sparse_batch(rng, 512, 6), sparse_batch(rng, 40, 3)]
    assert len(data[0]["values"]) > 512
    shapes = "indices:int64(3584*2)\nvalues:int64(3584)\ndense_shape:int64(2)\nweights:float(3584)"
    dst = str(tmp_path / "opt")
    _, report = optimize(sparse_model, dst, shapes, seed_config(512, 1, 6), test_data=data)
    r = report.to_dict()
    assert r["rewrite"]["replaced"] == 5 and r["rewrite"]["features"] == 1 and r["config"]["inferred"] == {}
    batches = data + [sparse_batch(rng, 512, 6)]
    assert_same_outputs(serve_here(sparse_model, batches), serve_fresh(dst, batches), what="sparse pieces")
    # Left open, the sizes are inferred with the same meaning, and the report says from what.
    _, report = optimize(sparse_model, str(tmp_path / "inferred"), shapes, None, test_data=data)
    inferred = report.to_dict()["config"]["inferred"]
    assert inferred["tiemb/max_batch_size"] == "512: feature 'values' has 512 samples in test batch 0"
    assert inferred["tiemb/max_nnz"].startswith("6: feature 'values' has 6 ids in sample ")
    assert inferred["tiemb/slot_num"].startswith("1: the fused op tiemb/lookup_0 reads 1 features")


def test_sparse_pieces_need_real_test_data(sparse_model, tmp_path):
    with pytest.raises(ValueError, match=r"input 'indices' holds a sparse tensor's segment ids .*pass test_data"):
        optimize(sparse_model, str(tmp_path / "o"), "indices:int64(64*2)\nvalues:int64(64)\ndense_shape:int64(2)\n"
                 "weights:float(64)", None)


def test_too_small_sizes_name_parameter_value_and_feature(sparse_model, tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = [sparse_batch(rng, 512, 6)]
    shapes = "indices:int64(3584*2)\nvalues:int64(3584)\ndense_shape:int64(2)\nweights:float(3584)"
    out = str(tmp_path / "o")
    for cfg, message in [
        (seed_config(256, 1, 6), r"tiemb/max_batch_size = 256 but feature 'values' has 512 samples in test batch 0 "
                                 r"\(needs tiemb/max_batch_size >= 512\)"),
        (seed_config(512, 1, 4), r"tiemb/max_nnz = 4 but feature 'values' has 6 ids in sample \d+ of test batch 0 "
                                 r"\(needs tiemb/max_nnz >= 6\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            optimize(sparse_model, out, shapes, cfg, test_data=data)
        assert not os.path.exists(out)


# ----------------------------------------------------------------- TF1 feature columns

def test_feature_column_deepfm_27_features(tmp_path, seed):
    """The TF1 feature-column DeepFM (SavedModelBuilder export, TF1 control flow): 26 categorical features and
    genres (width 6), each read by a linear and an embedding column: slot_num = 27, not 54."""
    src = str(tmp_path / "deepfm")
    spec = models.deepfm(src, VOCAB, dnn=(32, 16), seed=1)
    shapes = "cat:int64(256*26)\ndense:float(256*13)\ngenres:int64(256*6)"
    with pytest.raises(ValueError, match=r"tiemb/slot_num = 26 but the fused op tiemb/lookup_0 reads 27 features "
                                         r"\(distinct id inputs: cat\[:, 0\], cat\[:, 10\], .*\) \(needs tiemb/slot_num >= 27\)"):
        optimize(src, str(tmp_path / "x"), shapes, seed_config(256, 26, 6))
    with pytest.raises(ValueError, match=r"tiemb/max_nnz = 4 but feature 'genres' (has 6 ids in sample \d+ of|is read from "
                                         r"an id matrix of width 6 in) test batch 0 \(needs tiemb/max_nnz >= 6\)"):
        optimize(src, str(tmp_path / "x"), shapes, seed_config(256, 27, 4))
    dst = str(tmp_path / "opt")
    _, report = optimize(src, dst, shapes, seed_config(256, 27, 6))
    assert report.rewrite["replaced"] == 54 and report.rewrite["features"] == 27
    rng = np.random.default_rng(seed)
    batches = [models.random_batch(spec, 256, rng, missing=0.1), models.real_batch(spec)]
    assert_same_outputs(serve_here(src, batches), serve_fresh(dst, batches), what="deepfm")


# ----------------------------------------------------------------- serving honours the sizes

def test_serving_refuses_batches_and_samples_over_the_sizes(sparse_model, tmp_path, seed):
    rng = np.random.default_rng(seed)
    shapes = "indices:int64(512*2)\nvalues:int64(512)\ndense_shape:int64(2)\nweights:float(512)"
    dst = str(tmp_path / "opt")
    optimize(sparse_model, dst, shapes, seed_config(64, 1, 4), test_data=[sparse_batch(rng, 64, 4)])
    fn = tf.saved_model.load(dst).signatures["serving_default"]
    for feeds, message in [
        (sparse_batch(rng, 65, 4), r"slot \d: 65 output rows exceed max_batch_size = 64"),
        (sparse_batch(rng, 16, 5), r"slot \d: sample \d+ has 5 ids, more than max_nnz = 4"),
    ]:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            fn(**{k: tf.constant(v) for k, v in feeds.items()})
    ok = sparse_batch(rng, 64, 4)
    want = serve_here(sparse_model, [ok])[0]
    got = {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in ok.items()}).items()}
    assert_same_outputs([want], [got])


def test_serving_keras_gathers_refuse_more_samples(tmp_path, seed):
    src, dst = str(tmp_path / "wd"), str(tmp_path / "opt")
    spec = models.wide_deep(src, VOCAB, tower=(16,), seed=1)
    optimize(src, dst, ["32*26", "32*13"], seed_config(32, 26, 1))
    fn = tf.saved_model.load(dst).signatures["serving_default"]
    feeds = models.random_batch(spec, 33, np.random.default_rng(seed))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot \d+: 33 samples exceed max_batch_size = 32"):
        fn(**{k: tf.constant(v) for k, v in feeds.items()})
