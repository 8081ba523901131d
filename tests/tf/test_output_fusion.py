"""Output fusion (tiemb/rewrite/fusion_outputs.py): where a model concatenates,
stacks or sums its lookups, the op writes one output laid out as the result.
Checked on models written by others (Keras W&D and DLRM, deepctr, feature
columns) and on hand-written graphs where the concatenation has other
inputs and readers: node counts, what the report lists, and outputs equal to
TensorFlow's (bit for bit where the arithmetic is the same)."""

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from serving import assert_same_outputs, run_in_threads, serve_fresh, serve_here  # noqa: E402
from tiemb import tf_ops  # noqa: E402
from tiemb.bench import models  # noqa: E402
from tiemb.rewrite import rewrite_saved_model  # noqa: E402
from tiemb.rewrite.saved_model import freeze_function  # noqa: E402
from tiemb.rewrite.sparse_lookup import rewrite_sparse_lookups  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

VOCAB = models.vocab_for("tiny")


class Frozen:
    """A SavedModel's serving signature frozen to a GraphDef, rewritten with
    and without output fusion, run in sessions on the same feeds."""

    def __init__(self, src, tmp_path):
        self.loaded = tf.saved_model.load(src)
        fn = self.loaded.signatures["serving_default"]
        frozen, resources = freeze_function(fn, 64 << 20)
        self.graph_def = frozen.graph.as_graph_def()
        names = sorted(fn.structured_input_signature[1])
        self.inputs = dict(zip(names, [t.name for t in frozen.inputs[:len(names)]]))
        self.outputs = [t.name for t in frozen.outputs]
        kw = dict(max_batch_size=512, max_nnz=models.GENRES_LEN, resources=resources)
        self.plain, self.plain_report = rewrite_sparse_lookups(self.graph_def, str(tmp_path / "s0"),
                                                               fuse_outputs=False, **kw)
        self.fused, self.report = rewrite_sparse_lookups(self.graph_def, str(tmp_path / "s1"), **kw)
        self.stores = {id(self.plain): str(tmp_path / "s0"), id(self.fused): str(tmp_path / "s1")}

    def run(self, graph_def, feeds, fetches):
        graph = tf.Graph()
        with graph.as_default():
            store = self.stores.get(id(graph_def))
            tf.compat.v1.import_graph_def(graph_def, name="",
                                          input_map={"tiemb/store:0": tf.constant(store)} if store else None)
        with tf.compat.v1.Session(graph=graph) as s:
            return s.run(fetches, {self.inputs[k]: v for k, v in feeds.items()})


def count(graph_def, op):
    return sum(n.op == op for n in graph_def.node)


def lookup_outputs(graph_def):
    return sum(len(n.attr["out_types"].list.type) for n in graph_def.node if n.op == "TiembLookup")


def merged(report):
    return [(m["pattern"], len(m["slots"])) for op in report.ops for m in op["merged"]]


def test_keras_wide_deep_concat_and_wide_sum(tmp_path, seed):
    """W&D: the 26 deep embeddings become one block of the concatenation that
    also holds the dense features (a 2-input ConcatV2 stays), and the 26 wide
    ones' Keras Add() chain one reduction."""
    src = str(tmp_path / "wd")
    spec = models.wide_deep(src, VOCAB, tower=(32, 32), seed=seed % 1000)
    g = Frozen(src, tmp_path)
    assert merged(g.report) == [("concat", 26), ("sum", 26)], g.report.ops
    assert lookup_outputs(g.plain) == 52 and lookup_outputs(g.fused) == 2
    concat = g.report.ops[0]["merged"][0]["into"]
    assert count(g.fused, "ConcatV2") == count(g.plain, "ConcatV2")       # the dense features keep one
    assert {n.name: len(n.input) for n in g.fused.node if n.op == "ConcatV2"}[concat] == 3   # dense, block, axis
    assert count(g.plain, "AddV2") - count(g.fused, "AddV2") >= 25, (count(g.plain, "AddV2"), count(g.fused, "AddV2"))
    feeds = models.random_batch(spec, 300, np.random.default_rng(seed))
    fetch = [f"{concat}:0"] + g.outputs
    want, plain, fused = (g.run(gd, feeds, fetch) for gd in (g.graph_def, g.plain, g.fused))
    np.testing.assert_array_equal(fused[0], plain[0])    # the concatenation: the same bytes
    np.testing.assert_array_equal(fused[0], want[0])
    # The wide sum adds in another order: equal within float32 rounding.
    np.testing.assert_allclose(fused[1], want[1], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fused[1], plain[1], rtol=1e-6, atol=1e-7)


def test_keras_dlrm_stack(tmp_path, seed):
    """DLRM stacks the bottom MLP's vector with 26 embeddings: the embeddings
    become one [rows, 26, dim] block next to the vector; the stacked tensor is
    bit for bit the same; the optimized SavedModel serves equal outputs from
    a fresh process."""
    src = str(tmp_path / "dlrm")
    spec = models.dlrm(src, VOCAB, dim=16, bottom=(32,), top=(32, 16), seed=seed % 1000)
    g = Frozen(src, tmp_path)
    assert merged(g.report) == [("stack", 26)] and lookup_outputs(g.fused) == 1
    stack = g.report.ops[0]["merged"][0]["into"]
    assert count(g.fused, "Pack") == count(g.plain, "Pack") - 1
    feeds = models.random_batch(spec, 200, np.random.default_rng(seed))
    want, plain, fused = (g.run(gd, feeds, [f"{stack}:0"] + g.outputs) for gd in (g.graph_def, g.plain, g.fused))
    np.testing.assert_array_equal(fused[0], want[0])
    np.testing.assert_array_equal(fused[1], plain[1])
    report = rewrite_saved_model(src, str(tmp_path / "opt"), max_batch_size=512, max_nnz=8)
    assert merged(report) == [("stack", 26)]
    batches = [models.random_batch(spec, 512, np.random.default_rng(seed)), models.real_batch(spec)]
    assert_same_outputs(serve_here(src, batches), serve_fresh(str(tmp_path / "opt"), batches))


def test_feature_column_deepfm(tmp_path, seed):
    """TF1 feature columns: input_layer's reshape to [batch, dim] reads the
    batch size through Shape; the concatenation and the linear model's sum
    fuse, and the FM part (which reads the concatenation) is unchanged."""
    src = str(tmp_path / "deepfm")
    spec = models.deepfm(src, VOCAB, dim=8, dnn=(32, 16), seed=seed % 1000)
    g = Frozen(src, tmp_path)
    pats = dict(merged(g.report))
    assert pats.get("concat", 0) >= 26 and pats.get("sum", 0) >= 26, g.report.ops
    assert lookup_outputs(g.fused) <= 4
    rng = np.random.default_rng(seed)
    for feeds in (models.random_batch(spec, 256, rng, missing=0.1), models.real_batch(spec)):
        want, plain, fused = (g.run(gd, feeds, g.outputs) for gd in (g.graph_def, g.plain, g.fused))
        np.testing.assert_allclose(fused[0], want[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(fused[0], plain[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["deepfm", "wdl"])
def test_deepctr_models(kind, tmp_path, seed):
    """deepctr concatenates its embeddings (concat_func) and sums its linear
    logits: the optimized model has fewer op outputs than lookups, lists what
    it merged, and serves what TensorFlow serves from a fresh process."""
    pytest.importorskip("deepctr", reason="deepctr is in requirements-test.txt")
    import subprocess
    import sys

    src = str(tmp_path / kind)
    script = os.path.join(os.path.dirname(__file__), "deepctr_models.py")
    proc = subprocess.run([sys.executable, script, kind, src, str(seed % 1000)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = rewrite_saved_model(src, str(tmp_path / "opt"), max_batch_size=512, max_nnz=8)
    n_out = sum(op["num_outputs"] for op in report.ops)
    assert merged(report) and n_out < report.replaced, report.ops
    for op in report.ops:     # every slot is in exactly one output
        inside = [s for m in op["merged"] for s in m["slots"]]
        assert len(inside) == len(set(inside)) and op["num_outputs"] == len(op["slots"]) - len(inside) + len(op["merged"])
    rng = np.random.default_rng(seed)
    vocab = [97, 1000, 50, 300, 120, 60]

    def batch(n):
        feeds = {f"C{i}": rng.integers(0, v, (n, 1)).astype(np.int32) for i, v in enumerate(vocab)}
        genres = np.zeros((n, 6), np.int32)
        for r, c in enumerate(rng.integers(0, 7, n)):
            genres[r, :c] = rng.integers(1, 25, c)
        feeds["genres"] = genres
        feeds.update({f"I{i}": rng.random((n, 1), dtype=np.float32) for i in range(3)})
        return feeds

    batches = [batch(512), batch(1)]
    assert_same_outputs(serve_here(src, batches), serve_fresh(str(tmp_path / "opt"), batches), what=kind)


class HandWritten(tf.Module):
    """Gathers from six tables feeding the shapes of use fusion must respect."""

    def __init__(self, rng):
        super().__init__()
        self.tables = [tf.Variable(rng.standard_normal((50, d)).astype(np.float32)) for d in (4, 3, 5, 2, 2, 4)]
        self.w = tf.Variable(rng.standard_normal((16, 1)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.int64), tf.TensorSpec([None, 4], tf.float32)])
    def serve(self, ids, dense):
        e = [tf.gather(t, ids[:, k]) for k, t in enumerate(self.tables)]
        # Dense features first, two lookups next: a block of two and a 2-input
        # concat; the concat also feeds a second reader.
        c = tf.concat([dense, e[0], e[1]], 1)                  # [rows, 11]
        c2 = tf.concat([c, e[2]], 1)                           # e[2] is also read below: stays separate
        return {"a": tf.matmul(c2, self.w), "b": tf.reduce_sum(c, 1, keepdims=True),
                "c": e[2] * 2.0,
                "d": tf.stack([e[3], e[4]], 0),                # stacked along the rows: not fusable
                "e": e[5] + tf.constant([1.0, 2.0, 3.0, 4.0])}  # a broadcast add: not a sum of lookups


def test_hand_written_concat_with_other_inputs_and_readers(tmp_path, seed):
    """Only what can be laid out as one block fuses; everything else keeps
    its meaning: outputs bit for bit TensorFlow's, served from a fresh process."""
    rng = np.random.default_rng(seed)
    m = HandWritten(rng)
    src = str(tmp_path / "hand")
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    report = rewrite_saved_model(src, str(tmp_path / "opt"), max_batch_size=512, max_nnz=1)
    assert report.replaced == 6
    assert merged(report) == [("concat", 2)], report.ops
    assert report.ops[0]["num_outputs"] == 5
    batches = [{"ids": rng.integers(0, 50, (n, 6)), "dense": rng.random((n, 4), dtype=np.float32)} for n in (64, 1)]
    assert_same_outputs(serve_here(src, batches), serve_fresh(str(tmp_path / "opt"), batches), rtol=0, atol=0)


def test_old_models_without_fusion_attributes_still_run(tmp_path, seed):
    """A TiembLookup node as saved before slot_outputs existed (no such
    attributes) runs unchanged: one output per slot."""
    g = Frozen(_keras_tiny(tmp_path, seed), tmp_path)
    op = next(n for n in g.plain.node if n.op == "TiembLookup")
    assert "slot_outputs" not in op.attr and "slot_offsets" not in op.attr
    feeds = {"cat": np.random.default_rng(seed).integers(0, 20, (8, models.NUM_CAT)),
             "dense": np.ones((8, models.NUM_DENSE), np.float32)}
    np.testing.assert_allclose(g.run(g.plain, feeds, g.outputs)[0], g.run(g.graph_def, feeds, g.outputs)[0],
                               rtol=1e-6, atol=1e-7)


def _keras_tiny(tmp_path, seed):
    src = str(tmp_path / "wd_tiny")
    models.wide_deep(src, VOCAB, tower=(8,), seed=seed % 1000)
    return src


def test_two_fused_ops_many_threads_no_deadlock(tmp_path, seed):
    """Two independent fused ops in one function, called from 8 threads at
    once, eagerly and through a session whose pools have one thread each:
    every call finishes with the single-threaded result (each op's work runs
    on TensorFlow's worker threads, concurrent calls on separate scratch)."""
    rng = np.random.default_rng(seed)
    dims = [4, 8, 1, 16]
    store = str(tmp_path / "store")
    tf_ops.write_store(store, {f"t{i}.tiemb": rng.standard_normal((1000, d)).astype(np.float32)
                               for i, d in enumerate(dims)}, max_batch_size=4096, slot_num=4, max_nnz=1)
    kw = dict(tables=[f"t{i}.tiemb" for i in range(4)], dims=dims, combiners=["sum"] * 4, modes=["gather"] * 4,
              id_columns=[0, 1, 2, 3], slot_outputs=[0, 0, 0, 0], slot_offsets=[0, 4, 12, 13])

    def model(a, b):
        no_segs = [tf.zeros([0], tf.int64)] * 4
        x = tf_ops.lookup(store, [a] * 4, no_segs, **kw)[0]
        y = tf_ops.lookup(store, [b] * 4, no_segs, **kw)[0]
        return tf.reduce_sum(x, 1) + tf.reduce_sum(y, 1)

    fn = tf.function(model, input_signature=[tf.TensorSpec([None, 4], tf.int64)] * 2)
    inputs = [(rng.integers(0, 1000, (n, 4)), rng.integers(0, 1000, (n, 4))) for n in (4096, 7, 1500)]
    want = [fn(a, b).numpy() for a, b in inputs]

    graph = tf.Graph()
    with graph.as_default():
        pa, pb = (tf.compat.v1.placeholder(tf.int64, [None, 4]) for _ in range(2))
        out = model(pa, pb)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    session = tf.compat.v1.Session(graph=graph, config=config)

    def body(k):
        for r in range(15):
            i = (k + r) % len(inputs)
            a, b = inputs[i]
            got = fn(a, b).numpy() if k % 2 else session.run(out, {pa: a, pb: b})
            np.testing.assert_array_equal(got, want[i])
    run_in_threads(body, 8)
