"""Masked pooling of padded multi-hot id matrices (fusion_masked_pooling.py, fusion_dense_to_sparse.py): NVIDIA
DeepLearningExamples' TF2 Wide&Deep multi-hot features, written the way its
``_categorical_embedding_lookup`` writes them (tiemb/bench/multihot.py),
fused into one dense id matrix slot each; node counts, the report and equal
outputs."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from test_rewrite_sparse import frozen, run  # noqa: E402
from tiemb import tf_ops  # noqa: E402
from tiemb.bench.multihot import feature_layer  # noqa: E402
from tiemb.rewrite import rewrite_sparse_lookups  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

HOT = 3


def build(rng, **kw):
    vocabs, dims, combiners = [50, 300, 20, 7], [4, 16, 8, 3], ["sum", "mean", "mean", "sum"]
    layer = feature_layer(vocabs, dims, combiners, **kw)
    # Multi-hot features as separate inputs (NVIDIA's), or as column slices of one id matrix.
    sig = [tf.TensorSpec([None, 1], tf.int64), tf.TensorSpec([None, HOT], tf.int64),
           tf.TensorSpec([None, 2 * HOT + 1], tf.int64)]
    layer([tf.zeros([1, 1], tf.int64), tf.zeros([1, HOT], tf.int64), tf.zeros([1, HOT], tf.int64),
           tf.zeros([1, HOT], tf.int64)])
    for t in layer.tables:
        t.assign(rng.standard_normal(t.shape).astype(np.float32))

    def model(one, multi, wide):
        out = layer([one, multi, wide[:, 1:1 + HOT], wide[:, 1 + HOT:]])   # x[:, i:j] and x[:, i:]
        return [tf.nn.relu(out) * 2.0, out]

    return frozen(model, sig), vocabs


def batch(rng, vocabs, n, padding=0.3):
    def ids(v, k):
        x = rng.integers(0, v, (n, k))
        x[rng.random((n, k)) < padding] = -1
        if padding:
            x[::4] = -1                     # rows with no valid id at all
        return x

    wide = np.concatenate([ids(vocabs[0], 1), ids(vocabs[2], HOT), ids(vocabs[3], HOT)], 1)
    return [rng.integers(0, vocabs[0], (n, 1)), ids(vocabs[1], HOT), wide]


def ops_of(gd):
    return [n.op for n in gd.node]


@pytest.mark.parametrize("clip", [False, True], ids=["gather-ids", "gather-max-ids-0"])
def test_nvidia_multi_hot_pooling_is_fused(clip, tmp_path, seed):
    rng = np.random.default_rng(seed)
    (gd, inputs, outputs), vocabs = build(rng, clip=clip)
    before = ops_of(gd)
    assert before.count("GatherV2") == 4 and before.count("DivNoNan") == 2 and before.count("GreaterEqual") == 3
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=HOT)
    assert report.found == report.replaced == 4 and report.left_alone == [], report.as_dict()
    after = ops_of(new_gd)
    assert after.count("TiembLookup") == 1 and after.count("Mul") == 1 and not {  # the model's own * 2.0
        "GatherV2", "GreaterEqual", "DivNoNan", "Maximum", "ExpandDims", "Sum", "Cast"} & set(after), after
    pooled = sorted((e["combiner"], e["id_column"], e["id_width"]) for e in report.lookups if e["id_width"] >= 0)
    assert pooled == [("mean", -1, 0), ("mean", 1, HOT), ("sum", 1 + HOT, 0)], report.lookups
    assert sorted(e["idiom"] for e in report.lookups) == ["gather"] + ["pooled id matrix"] * 3, report.lookups
    # The reference: TensorFlow on the clipped model (a CPU gather of -1 fails; the mask makes
    # the clipped read irrelevant, and it is what NVIDIA's GPU gather of -1 computes: zeros).
    (ref_gd, _, _), _ = build(np.random.default_rng(seed), clip=True)
    for n, padding in ((64, 0.3), (1, 0.0), (5, 1.0), (17, 0.0)):
        feeds = batch(rng, vocabs, n, padding)
        want = run(ref_gd, inputs, outputs, feeds)
        got = run(new_gd, inputs, outputs, feeds)
        if padding == 0.0 or clip:      # TensorFlow runs the model as written on these
            for a, b in zip(run(gd, inputs, outputs, feeds), want):
                np.testing.assert_array_equal(a, b)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=f"seed {seed}, batch {n}, pad {padding}")
    if not clip:   # what the original does with padding on a CPU, and what the rewrite does instead
        with pytest.raises(Exception, match=r"indices.* = -1 is not in"):
            run(gd, inputs, outputs, batch(rng, vocabs, 8, 0.5))
    bad = batch(rng, vocabs, 4, 0.0)
    bad[1][2, 1] = vocabs[1]
    with pytest.raises(Exception, match=rf"ids\[2, 1\] = {vocabs[1]} is out of range \[0, {vocabs[1]}\)"):
        run(new_gd, inputs, outputs, bad)


def test_plain_division_keeps_the_division(tmp_path, seed):
    """A mean by plain division is NaN for rows without ids (divide_no_nan gives 0): the masked sum
    is fused, the count and the division stay TensorFlow's, and the report says why."""
    rng = np.random.default_rng(seed)
    (gd, inputs, outputs), vocabs = build(rng, clip=True, divide=True)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=HOT)
    assert report.replaced == 4, report.as_dict()
    reasons = [e["reason"] for e in report.left_alone]
    assert len(reasons) == 2 and all("plain division" in r for r in reasons), reasons
    after = ops_of(new_gd)
    assert after.count("RealDiv") == 2 and "GatherV2" not in after, after
    assert all(e["combiner"] == "sum" for e in report.lookups if e["id_width"] >= 0)
    for n, padding in ((33, 0.3), (8, 1.0)):
        feeds = batch(rng, vocabs, n, padding)
        for w, g in zip(run(gd, inputs, outputs, feeds), run(new_gd, inputs, outputs, feeds)):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)     # NaN rows equal NaN rows


def _keras_masked(rng, vocab, dim, k):
    """Keras 3: Embedding(mask_zero=True) pooled by GlobalAveragePooling1D with the mask, and by a
    masked sum over the sequence axis (a layer that takes the mask, as Keras passes it)."""
    import keras

    class MaskedSum(keras.layers.Layer):
        def __init__(self):
            super().__init__()
            self.supports_masking = True

        def call(self, x, mask=None):
            m = keras.ops.expand_dims(keras.ops.cast(mask, x.dtype), -1)
            return keras.ops.sum(x * m, axis=1)

        def compute_mask(self, x, mask=None):
            return None

    ids = keras.Input(shape=(k,), dtype="int64")
    wide = keras.Input(shape=(2 * k,), dtype="int64")
    a = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(vocab, dim, mask_zero=True)(ids))
    b = MaskedSum()(keras.layers.Embedding(vocab, dim, mask_zero=True)(ids))
    c = MaskedSum()(keras.layers.Embedding(vocab, dim, mask_zero=True)(wide[:, k:]))
    model = keras.Model([ids, wide], keras.layers.Concatenate()([a, b, c]))
    for w in model.weights:
        w.assign(rng.standard_normal(w.shape).astype(np.float32))
    return model


def test_keras_mask_zero_pooling(tmp_path, seed):
    rng = np.random.default_rng(seed)
    vocab, dim, k = 40, 8, 4
    model = _keras_masked(rng, vocab, dim, k)
    sig = [tf.TensorSpec([None, k], tf.int64), tf.TensorSpec([None, 2 * k], tf.int64)]
    gd, inputs, outputs = frozen(lambda a, b: model([a, b]), sig)
    before = ops_of(gd)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=2 * k)
    after = ops_of(new_gd)
    print(report.as_dict(), sorted(set(before)), sorted(set(after)))
    assert report.replaced == 3, report.as_dict()
    pooled = [e for e in report.lookups if e["id_width"] >= 0]
    assert len(pooled) == 3 and {e["combiner"] for e in pooled} == {"sum"}, report.lookups
    # GlobalAveragePooling1D divides by the count without divide_no_nan (NaN for rows without ids):
    # its masked sum is fused, the division stays, and the report says why.
    assert [e["idiom"] for e in report.left_alone] == ["masked pooling"], report.left_alone
    assert after.count("TiembLookup") == 1 and "GatherV2" not in after and after.count("Mul") == 0, after
    for n in (1, 9, 64):
        feeds = [rng.integers(-vocab, vocab, (n, k)), rng.integers(-vocab, vocab, (n, 2 * k))]
        feeds[0][rng.random((n, k)) < 0.4] = 0
        feeds[1][rng.random((n, 2 * k)) < 0.4] = 0
        feeds[0][::3] = 0                      # rows of padding only: NaN from the average, zeros from the sums
        feeds[1][::2, k:] = 0
        want, got = run(gd, inputs, outputs, feeds), run(new_gd, inputs, outputs, feeds)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6, err_msg=f"seed {seed}, batch {n}")


def test_deepctr_length_input_pooling(tmp_path, seed):
    """deepctr's VarLenSparseFeat with length_name: SequencePoolingLayer masks by position (j < length).
    The slot reads SelectV2(sequence_mask, ids, -1); sums are fused whole, the mean's division by the
    length (not the count: they differ for lengths above maxlen) stays, and the report says so."""
    pytest.importorskip("deepctr", reason="deepctr is in requirements-test.txt")
    import os
    import subprocess
    import sys

    from serving import assert_same_outputs, serve_fresh, serve_here
    from tiemb.rewrite import rewrite_saved_model

    src = str(tmp_path / "deepfm_len")
    script = os.path.join(os.path.dirname(__file__), "deepctr_models.py")
    proc = subprocess.run([sys.executable, script, "deepfm_len", src, str(seed % 1000)], capture_output=True,
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = rewrite_saved_model(src, str(tmp_path / "opt"), max_batch_size=512, max_nnz=8)
    pooled = sorted(e["combiner"] for e in report.lookups if e["id_width"] >= 0)
    assert pooled == ["sum"] * 4, report.lookups          # genres (mean) and genres2 (sum), linear and DNN
    assert len(report.left_alone) == 2 and all("length input" in e["reason"] for e in report.left_alone)
    rng = np.random.default_rng(seed)
    vocab = [97, 1000, 50, 300, 120, 60]

    def batch(n):
        feeds = {f"C{i}": rng.integers(0, v, (n, 1)).astype(np.int32) for i, v in enumerate(vocab)}
        feeds["genres"] = rng.integers(0, 25, (n, 6)).astype(np.int32)
        feeds["genres2"] = rng.integers(0, 25, (n, 6)).astype(np.int32)
        feeds["genres_len"] = rng.integers(0, 9, (n, 1)).astype(np.int32)    # 0 and above maxlen (6) too
        feeds.update({f"I{i}": rng.random((n, 1), dtype=np.float32) for i in range(3)})
        return feeds

    batches = [batch(512), batch(1), batch(33)]
    assert_same_outputs(serve_here(src, batches), serve_fresh(str(tmp_path / "opt"), batches), what="deepfm_len")


def test_pooled_slots_stay_on_the_gpu_kernel(tmp_path, seed):
    """The GPU engine serves dense id matrices: on a GPU target the op keeps TensorFlow's placement."""
    (gd, _, _), _ = build(np.random.default_rng(seed))
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=HOT, device="gpu")
    (op,) = [n for n in new_gd.node if n.op == "TiembLookup"]
    assert op.device == "" and report.note == "", (op.device, report.note)
    assert list(op.attr["id_widths"].list.i) == [e["id_width"] for e in report.lookups]
