"""Equivalence on whole models built by code we did not write (Keras, TF1
feature columns, deepctr): build, save, optimize, serve the optimized model
in a fresh process, compare with the original on random and on real rows."""

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from serving import assert_same_outputs, serve_fresh, serve_here  # noqa: E402
from tiemb import tf_ops  # noqa: E402
from tiemb.bench import models  # noqa: E402
from tiemb.rewrite import rewrite_saved_model  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

VOCAB = models.vocab_for("tiny")


def saved_ops(path):
    """Op types in a SavedModel's graph and functions."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    gd = sm.meta_graphs[0].graph_def
    return {n.op for n in gd.node} | {n.op for fn in gd.library.function for n in fn.node_def}


def optimize_and_compare(src, dst, spec, rng, expect_replaced, max_nnz=8, freeze_limit_bytes=64 << 20):
    report = rewrite_saved_model(src, dst, max_batch_size=512, max_nnz=max_nnz, freeze_limit_bytes=freeze_limit_bytes)
    assert report.found == expect_replaced and report.replaced == expect_replaced, report.as_dict()
    assert report.left_alone == [], report.left_alone
    batches = [models.random_batch(spec, 512, rng, missing=0.1), models.random_batch(spec, 1, rng),
               models.real_batch(spec)]
    assert_same_outputs(serve_here(src, batches), serve_fresh(dst, batches), what=spec.name)
    return report


# Tables frozen into the graph (small ones, the default) or read straight from
# the variables (what happens to tables too big for a 2 GB GraphDef).
FREEZE_LIMITS = pytest.mark.parametrize("freeze_limit", [64 << 20, 0], ids=["frozen-tables", "variable-tables"])


@FREEZE_LIMITS
def test_keras_wide_deep(freeze_limit, tmp_path, seed):
    src = str(tmp_path / "wd")
    spec = models.wide_deep(src, VOCAB, tower=(256, 256), seed=seed % 1000)
    rng = np.random.default_rng(seed)
    optimize_and_compare(src, str(tmp_path / "opt"), spec, rng, 2 * models.NUM_CAT,
                         freeze_limit_bytes=freeze_limit)
    ops = saved_ops(str(tmp_path / "opt"))
    # The whole embedding layer is the op: Keras' id wrapping and the column slices are folded in.
    assert "TiembLookup" in ops and not {"GatherV2", "SelectV2", "StridedSlice"} & ops, sorted(ops)
    # Keras indexes Python-style: -1 is the last row, -rows the first; below that both fail.
    wrapped = models.random_batch(spec, 64, rng)
    wrapped["cat"][::3, 3] = -1
    wrapped["cat"][1::5, 0] = -VOCAB[0]
    assert_same_outputs(serve_here(src, [wrapped]), serve_fresh(str(tmp_path / "opt"), [wrapped]))
    wrapped["cat"][0, 2] = -VOCAB[2] - 1
    with pytest.raises(Exception, match=rf"(?i)(out of range \[-{VOCAB[2]}, {VOCAB[2]}\)|not in \[0, {VOCAB[2]}\))"):
        serve_here(src, [wrapped])
    with pytest.raises(Exception, match=rf"out of range \[-{VOCAB[2]}, {VOCAB[2]}\)"):
        serve_fresh(str(tmp_path / "opt"), [wrapped])


def test_keras_dlrm(tmp_path, seed):
    src = str(tmp_path / "dlrm")
    spec = models.dlrm(src, VOCAB, dim=16, bottom=(64,), top=(64, 32), seed=seed % 1000)
    optimize_and_compare(src, str(tmp_path / "opt"), spec, np.random.default_rng(seed), models.NUM_CAT)


@pytest.mark.parametrize("control_flow_v1", [True, False], ids=["switch-merge", "cf-v2"])
def test_feature_column_deepfm_tf1_graph(control_flow_v1, tmp_path, seed):
    # TF1 control flow with tables frozen, TF2 control flow with tables read from the variables.
    freeze_limit = 64 << 20 if control_flow_v1 else 0
    """TF1 graph: embedding_column over categorical_column_with_identity (26
    features + a multi-valued mean-combined one of unknown rank) and a
    linear_model over the same columns. The rank check around the
    multi-valued feature (Assert inside Switch/Merge with TF1 control flow)
    stays and still runs."""
    src = str(tmp_path / "deepfm")
    spec = models.deepfm(src, VOCAB, seed=seed % 1000, control_flow_v1=control_flow_v1)
    before = saved_ops(src)
    assert "SparseFillEmptyRows" in before and "Assert" in before
    if control_flow_v1:
        assert {"Switch", "Merge"} <= before
    report = optimize_and_compare(src, str(tmp_path / "opt"), spec, np.random.default_rng(seed),
                                  2 * (models.NUM_CAT + 1), freeze_limit_bytes=freeze_limit)
    after = saved_ops(str(tmp_path / "opt"))
    assert "TiembLookup" in after and not {"SparseFillEmptyRows", "SparseSegmentSum", "SparseSegmentMean", "Unique",
                                           "ZerosLike", "Tile"} & after, sorted(after)
    assert "Assert" in after and (not control_flow_v1 or {"Switch", "Merge"} <= after)
    # The dense-to-sparse conversion of every id feature is inside the op too: it reads the
    # -1-padded id matrix (cat's column slices, genres whole) in place.
    assert not {"NotEqual", "Where", "GatherNd"} & after, sorted(after)
    widths = sorted((e["id_column"], e["id_width"]) for e in report.lookups)
    assert widths == sorted([(i, 1) for i in range(models.NUM_CAT)] * 2 + [(-1, 0)] * 2), widths
    # Rows with every id missing (-1) in every feature: zeros from every lookup, as in TensorFlow.
    empty = models.random_batch(spec, 8, np.random.default_rng(seed))
    empty["cat"][:] = -1
    empty["genres"][:] = -1
    assert_same_outputs(serve_here(src, [empty]), serve_fresh(str(tmp_path / "opt"), [empty]))
    # The checks still fire: a scalar genres input fails the rank assert, as before.
    bad = models.random_batch(spec, 4, np.random.default_rng(seed))
    bad["genres"] = np.array(3, np.int64)
    for serve, path in ((serve_here, src), (serve_fresh, str(tmp_path / "opt"))):
        with pytest.raises(Exception, match="(?i)assert|rank"):
            serve(path, [bad])
    # And an id past a vocabulary is an error in both, never a silent value.
    bad = models.random_batch(spec, 4, np.random.default_rng(seed))
    bad["cat"][0, 0] = VOCAB[0]
    for serve, path in ((serve_here, src), (serve_fresh, str(tmp_path / "opt"))):
        with pytest.raises(Exception, match=rf"(?i)(out of range|not in) \[0, {VOCAB[0]}\)"):
            serve(path, [bad])


def test_feature_column_hash_bucket_and_linear_model(tmp_path, seed):
    """String features through categorical_column_with_hash_bucket (sqrtn) and
    a weighted_categorical_column in a linear model."""
    tf1 = tf.compat.v1
    fc = tf1.feature_column
    src = str(tmp_path / "src")
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(seed % 1000)
        words = tf1.placeholder(tf.string, [None, 3], name="words")
        ids = tf1.placeholder(tf.int64, [None, 4], name="ids")
        weights = tf1.placeholder(tf.float32, [None, 4], name="weights")
        feats = {"words": words, "ids": ids, "w": weights}
        hashed = fc.categorical_column_with_hash_bucket("words", 40)
        ided = fc.categorical_column_with_identity("ids", 30)
        weighted = fc.weighted_categorical_column(ided, "w")
        deep = fc.input_layer(feats, [fc.embedding_column(hashed, 6, combiner="sqrtn"),
                                      fc.embedding_column(weighted, 5, combiner="mean")])
        lin = fc.linear_model(feats, [hashed, weighted])
        out = tf.identity(tf.reduce_sum(deep, 1, keepdims=True) * 0.5 + lin, name="out")
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            b = tf1.saved_model.Builder(src)
            b.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={
                "serving_default": tf1.saved_model.predict_signature_def({"words": words, "ids": ids, "w": weights},
                                                                         {"out": out, "deep": deep})})
            b.save()
    rng = np.random.default_rng(seed)
    vocab = np.array([f"w{i}" for i in range(100)] + [""])      # "" is missing

    def batch(n):
        # ids and weights must drop the same entries (-1 and 0.0 would not): every id is present,
        # negative weights are pruned by the mean embedding, kept by the linear model's sum.
        return {"words": rng.choice(vocab, (n, 3)).astype(object).astype(bytes), "ids": rng.integers(0, 30, (n, 4)),
                "w": rng.choice([-2.0, 0.5, 1.0, 3.0], (n, 4)).astype(np.float32)}

    report = rewrite_saved_model(src, str(tmp_path / "opt"), max_batch_size=512, max_nnz=4)
    # The weighted column's dense-to-sparse conversions stay (the weights' own conversion is not fused), and
    # the report says so; the unweighted hashed column's conversion is of strings, not ids: no entry.
    partial = [e for e in report.left_alone if e["idiom"] == "feature column dense-to-sparse conversion"]
    assert report.replaced == 4 and len(partial) == 2 and all("weighted" in e["reason"] for e in partial) \
        and len(report.left_alone) == 2, report.as_dict()
    batches = [batch(100), batch(1), batch(512)]
    assert_same_outputs(serve_here(src, batches), serve_fresh(str(tmp_path / "opt"), batches))


@FREEZE_LIMITS
@pytest.mark.parametrize("weighted", [False, True])
def test_embedding_lookup_sparse_saved_model_each_combiner(weighted, freeze_limit, tmp_path, seed):
    """tf.nn.embedding_lookup_sparse with each combiner in one SavedModel, sparse
    inputs with empty and trailing-empty rows, served from a fresh process."""
    rng = np.random.default_rng(seed)

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.t = [tf.Variable(rng.standard_normal((50, d)).astype(np.float32)) for d in (4, 8, 3)]

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64, name="indices"),
                                      tf.TensorSpec([None], tf.int64, name="ids"),
                                      tf.TensorSpec([None], tf.float32, name="w")])
        def serve(self, indices, ids, w):
            sp = tf.SparseTensor(indices, ids, [tf.reduce_max(indices[:, 0]) + 1, 8])
            sw = tf.SparseTensor(indices, w, sp.dense_shape) if weighted else None
            return {c: tf.nn.embedding_lookup_sparse(t, sp, sw, combiner=c)
                    for t, c in zip(self.t, ("sum", "mean", "sqrtn"))}

    m = M()
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    report = rewrite_saved_model(src, dst, max_batch_size=64, max_nnz=8, freeze_limit_bytes=freeze_limit)
    assert report.replaced == 3, report.as_dict()
    batches = []
    for rows in (12, 1, 40):
        counts = rng.integers(0, 5, rows)
        counts[-1] = max(counts[-1], 1)                  # dense_shape comes from the last id's row
        counts[rng.random(rows) < 0.3] = 0
        counts[-1] = 1
        seg = np.repeat(np.arange(rows), counts)
        pos = np.concatenate([np.arange(c) for c in counts])
        batches.append({"indices": np.stack([seg, pos], 1).astype(np.int64),
                        "ids": rng.integers(0, 50, len(seg)).astype(np.int64),
                        "w": rng.choice([0.0, 0.5, 2.0], len(seg)).astype(np.float32)})
    assert_same_outputs(serve_here(src, batches), serve_fresh(dst, batches))


def test_partially_optimized_model_stays_equal(tmp_path, seed):
    """A sharded table (embedding_lookup_sparse over a list of variables) is
    not fused whole: the report names it and why; the Keras-style gather next
    to it, and the per-shard gathers, are fused; outputs are unchanged."""
    rng = np.random.default_rng(seed)

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.shards = [tf.Variable(rng.standard_normal((17, 4)).astype(np.float32)) for _ in range(3)]
            self.user = tf.Variable(rng.standard_normal((20, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64, name="indices"),
                                      tf.TensorSpec([None], tf.int64, name="ids"),
                                      tf.TensorSpec([None], tf.int64, name="user")])
        def serve(self, indices, ids, user):
            sp = tf.SparseTensor(indices, ids, [tf.shape(user, out_type=tf.int64)[0], 8])
            items = tf.nn.safe_embedding_lookup_sparse(self.shards, sp, None, combiner="mean")
            return {"out": tf.concat([items, tf.gather(self.user, user)], 1)}

    m = M()
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    report = rewrite_saved_model(src, dst, max_batch_size=64, max_nnz=8)
    reasons = [e["reason"] for e in report.left_alone]
    assert any("sharded table" in r for r in reasons), report.as_dict()
    assert report.replaced == 4, report.as_dict()                    # the user gather + 3 shard gathers
    batches = []
    for rows in (10, 1, 33):
        counts = rng.integers(0, 4, rows)
        seg = np.repeat(np.arange(rows), counts)
        pos = np.concatenate([np.arange(c) for c in counts]) if len(seg) else np.zeros(0, np.int64)
        batches.append({"indices": np.stack([seg, pos], 1).astype(np.int64).reshape(-1, 2),
                        "ids": rng.integers(-1, 51, len(seg)).astype(np.int64),
                        "user": rng.integers(0, 20, rows).astype(np.int64)})
    assert_same_outputs(serve_here(src, batches), serve_fresh(dst, batches))


def test_graph_without_embeddings_comes_back_unchanged(tmp_path, seed):
    rng = np.random.default_rng(seed)

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(rng.standard_normal((5, 3)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 5], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.nn.relu(x @ self.w)}

    m = M()
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    report = rewrite_saved_model(src, dst, max_batch_size=64, max_nnz=8)
    assert report.found == report.replaced == 0 and "no embedding lookups found" in report.note
    with open(os.path.join(src, "saved_model.pb"), "rb") as a, open(os.path.join(dst, "saved_model.pb"), "rb") as b:
        assert a.read() == b.read()
    batches = [{"x": rng.standard_normal((7, 5)).astype(np.float32)}]
    assert_same_outputs(serve_here(src, batches), serve_fresh(dst, batches))


def test_model_without_signatures_and_unreadable_models(tmp_path):
    m = tf.Module()
    m.v = tf.Variable(1.0)
    src = str(tmp_path / "nosig")
    tf.saved_model.save(m, src)
    with pytest.raises(ValueError, match=r"has no signature 'serving_default'; it has \[\]"):
        rewrite_saved_model(src, str(tmp_path / "out"), max_batch_size=8, max_nnz=1)
    assert not os.path.exists(tmp_path / "out")
    with pytest.raises(ValueError, match="cannot load a SavedModel from .*missing"):
        rewrite_saved_model(str(tmp_path / "missing"), str(tmp_path / "out"), max_batch_size=8, max_nnz=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00not a protobuf")
    with pytest.raises(ValueError, match="cannot load a SavedModel from .*broken"):
        rewrite_saved_model(str(broken), str(tmp_path / "out"), max_batch_size=8, max_nnz=1)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("kind", ["deepfm", "wdl"])
def test_deepctr_models(kind, tmp_path, seed):
    """deepctr's DeepFM and WDL (third-party model code) with a variable-length
    VarLenSparseFeat (mean over a padded id list; 0 is deepctr's padding id)."""
    pytest.importorskip("deepctr", reason="deepctr is in requirements-test.txt")
    import subprocess
    import sys

    src = str(tmp_path / kind)
    script = os.path.join(os.path.dirname(__file__), "deepctr_models.py")
    proc = subprocess.run([sys.executable, script, kind, src, str(seed % 1000)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = rewrite_saved_model(src, str(tmp_path / "opt"), max_batch_size=512, max_nnz=8)
    # DeepFM: 7 embeddings (6 + genres, shared by FM and DNN) and 7 linear (dim 1) ones; WDL: 7 + 6 linear.
    assert report.found == report.replaced == {"deepfm": 14, "wdl": 13}[kind] and report.left_alone == [], report.as_dict()
    rng = np.random.default_rng(seed)
    vocab = [97, 1000, 50, 300, 120, 60]

    def batch(n, real=False):
        feeds = {f"C{i}": rng.integers(0, v, (n, 1)).astype(np.int32) for i, v in enumerate(vocab)}
        genres = np.zeros((n, 6), np.int32)
        if real:   # the real MovieLens genres, hashed like the reference models do
            g = models.real_batch(models.ModelSpec("deepfm", VOCAB, 8))["genres"][:n]
            genres = np.where(g >= 0, g + 1, 0).astype(np.int32)
        else:
            for r, c in enumerate(rng.integers(0, 7, n)):
                genres[r, :c] = rng.integers(1, 25, c)
        feeds["genres"] = genres
        feeds.update({f"I{i}": rng.random((n, 1), dtype=np.float32) for i in range(3)})
        return feeds

    # The genres pooling (SequencePoolingLayer over Embedding(mask_zero=True); mean divides by the count
    # + 1e-8, which is the count in float32) is inside the op: one pooled slot per genres embedding.
    pooled = [e for e in report.lookups if e["id_width"] >= 0]
    assert len(pooled) == {"deepfm": 2, "wdl": 1}[kind] and {e["combiner"] for e in pooled} == {"mean"}, pooled
    ops = saved_ops(str(tmp_path / "opt"))
    assert not {"Tile", "RealDiv"} & ops, sorted(ops)
    batches = [batch(512), batch(1), batch(200, real=True)]
    batches[0]["genres"][::3] = 0      # rows with no genre at all: zeros, as deepctr's mean gives
    assert_same_outputs(serve_here(src, batches), serve_fresh(str(tmp_path / "opt"), batches), what=kind)


def test_dense_backends_level1_and_tolerance_drop(tmp_path, seed, monkeypatch):
    """Level 1: float16 tables and bfloat16 matmuls; every available backend
    is compared and timed, the report names the one kept. A backend beyond
    the tolerance is dropped with the measured difference."""
    from tiemb import backends

    src = str(tmp_path / "wd")
    spec = models.wide_deep(src, VOCAB, tower=(128, 128), seed=seed % 1000)
    rng = np.random.default_rng(seed)
    batches = [models.random_batch(spec, 256, rng), models.real_batch(spec)]
    report = rewrite_saved_model(src, str(tmp_path / "l1"), max_batch_size=512, max_nnz=8, level=1,
                                 test_batches=batches)
    dense = report.dense
    names = [r["name"] for r in dense["backend_results"]]
    assert names == ["xla", "tensorflow", "tensorflow-fp32"], dense
    assert dense["dense_backend"] in names and dense["level"] == 1
    chosen = next(r for r in dense["backend_results"] if r["name"] == dense["dense_backend"])
    assert 0 < chosen["max_rel_diff"] <= backends.TOLERANCE[1]
    if dense["dense_backend"] != "tensorflow-fp32":
        assert any("bfloat16" in n for n in dense["notes"]), dense
    got = serve_fresh(str(tmp_path / "l1"), batches)
    for w, g in zip(serve_here(src, batches), got):
        assert backends.relative_difference(w, g)[1] <= backends.TOLERANCE[1]
    # A tolerance the bfloat16 matmuls cannot meet: they are dropped, float32 is kept.
    monkeypatch.setitem(backends.TOLERANCE, 1, 1e-3)
    report = rewrite_saved_model(src, str(tmp_path / "strict"), max_batch_size=512, max_nnz=8, level=1,
                                 test_batches=batches)
    dropped = {d["name"]: d["reason"] for d in report.dense["dropped_backends"]}
    assert report.dense["dense_backend"] == "tensorflow-fp32", report.dense
    assert set(dropped) == {"xla", "tensorflow"} and all("beyond level 1's tolerance" in r for r in dropped.values())


def test_tensorrt_is_detected_not_assumed():
    from tiemb import backends

    ok, reason = backends.tensorrt_status()
    if not tf.sysconfig.get_build_info().get("is_tensorrt_build", False):
        assert not ok and "TensorRT" in reason
    # tiemb has no TF-TRT conversion: never a candidate, on a GPU target
    # reported as not offered with the detected reason.
    for device in ("gpu", "cpu"):
        assert "tf-trt" not in [name for name, _ in backends.candidates(0, device)]
    (trt,) = [d for d in backends.unavailable("gpu") if d["name"] == "tf-trt"]
    assert trt["reason"].startswith("not offered: ") and (ok or reason in trt["reason"]), trt
    assert "tf-trt" not in [d["name"] for d in backends.unavailable("cpu")]
    with pytest.raises(ValueError, match="dense backend must be one of .* got 'tf-trt'"):
        backends.apply("tf-trt", tf.compat.v1.GraphDef(), 0)


def test_big_tables_stay_variables_only_when_every_read_is_fused(tmp_path, seed):
    """A matrix also read some other way (a reduce) is not a table: frozen even
    over the limit, its gather still fused. A table too big to freeze whose
    gather cannot be fused (batch_dims) cannot be served from a frozen graph:
    a clear error, nothing written."""
    rng = np.random.default_rng(seed)

    class M(tf.Module):
        def __init__(self):
            super().__init__()
            self.t = tf.Variable(rng.standard_normal((40, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids")])
        def serve(self, ids):
            return {"y": tf.gather(self.t, ids) * tf.reduce_sum(self.t)}

        @tf.function(input_signature=[tf.TensorSpec([40, 2], tf.int64, name="ids")])
        def batched(self, ids):
            return {"y": tf.gather(self.t, ids, axis=1, batch_dims=1)}

    m = M()
    src = str(tmp_path / "src")
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve, "batched": m.batched})
    report = rewrite_saved_model(src, str(tmp_path / "limit0"), max_batch_size=64, max_nnz=1, freeze_limit_bytes=0)
    assert report.replaced == 1
    batches = [{"ids": rng.integers(0, 40, 9)}]
    assert_same_outputs(serve_here(src, batches), serve_fresh(str(tmp_path / "limit0"), batches))
    with pytest.raises(ValueError, match=r"table .* is read by .*, which is not an embedding lookup tiemb replaces, "
                                         r"and is too big to freeze"):
        rewrite_saved_model(src, str(tmp_path / "bad"), max_batch_size=64, max_nnz=1, freeze_limit_bytes=0,
                            signature="batched")
    assert not os.path.exists(tmp_path / "bad")
