"""Rewriting tf.nn.embedding_lookup_sparse into TiembLookup: node counts and equal outputs."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tiemb import tf_ops  # noqa: E402
from tiemb.rewrite import rewrite_sparse_lookups  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


def frozen(fn, signature):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    cf = convert_variables_to_constants_v2(tf.function(fn, input_signature=signature).get_concrete_function())
    return cf.graph.as_graph_def(), [t.name for t in cf.inputs], [t.name for t in cf.outputs]


def run(graph_def, inputs, outputs, feeds):
    tf_ops.load()

    def imp():
        tf.compat.v1.import_graph_def(graph_def, name="")

    w = tf.compat.v1.wrap_function(imp, [])
    g = w.graph
    fn = w.prune([g.as_graph_element(n) for n in inputs], [g.as_graph_element(n) for n in outputs])
    return [t.numpy() for t in fn(*[tf.constant(f) for f in feeds])]


def sparse_batch(rng, vocab, rows, max_nnz, id_dtype):
    counts = rng.integers(1, max_nnz + 1, size=rows)
    counts[rng.random(rows) < 0.25] = 0          # empty rows in the middle
    counts[-2:] = 0                               # and trailing ones (plain mode drops them)
    seg = np.repeat(np.arange(rows), counts)
    pos = np.concatenate([np.arange(c) for c in counts]) if len(seg) else np.zeros(0, np.int64)
    indices = np.stack([seg, pos], 1).astype(np.int64)
    return indices, rng.integers(0, vocab, len(seg)).astype(id_dtype), np.array([rows, max_nnz], np.int64)


@pytest.mark.parametrize("tables_as", ["variables", "constants"])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_embedding_lookup_sparse_each_combiner(tables_as, id_dtype, table_dtype, tmp_path, seed):
    rng = np.random.default_rng(seed)
    vocabs = [50, 300, 7]
    dims = [4, 16, 3]
    raw = [rng.standard_normal((v, d)).astype(table_dtype) for v, d in zip(vocabs, dims)]
    tabs = [tf.Variable(t) for t in raw] if tables_as == "variables" else [tf.constant(t) for t in raw]
    tid = tf.as_dtype(id_dtype)
    sig = [tf.SparseTensorSpec([None, None], tid)] * 3

    def model(a, b, c):
        outs = [tf.nn.embedding_lookup_sparse(t, sp, None, combiner=comb)
                for t, sp, comb in zip(tabs, (a, b, c), ("sum", "mean", "sqrtn"))]
        return [tf.reduce_sum(o, axis=1, keepdims=True) * 2.0 + 0 * o[:, :1] for o in outs] + outs

    gd, inputs, outputs = frozen(model, sig)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=4)
    assert report.found == 3 and report.replaced == 3, report.as_dict()
    ops = [n.op for n in new_gd.node]
    assert ops.count("TiembLookup") == 1
    assert not {"SparseSegmentSum", "SparseSegmentMean", "SparseSegmentSqrtN", "Unique"} & set(ops)
    assert not any(n.op == "Const" and n.attr["value"].tensor.tensor_shape.dim and
                   n.attr["value"].tensor.tensor_shape.dim[0].size in vocabs and len(n.attr["value"].tensor.tensor_shape.dim) == 2
                   for n in new_gd.node), "a table constant was left in the graph"
    for _ in range(3):
        feeds = []
        for v in vocabs:
            feeds += list(sparse_batch(rng, v, 12, 4, id_dtype))
        want = run(gd, inputs, outputs, feeds)
        got = run(new_gd, inputs, outputs, feeds)
        for w_, g_ in zip(want, got):
            assert w_.dtype == g_.dtype and w_.shape == g_.shape
            tol = 1e-6 if table_dtype == np.float32 else 1e-3
            np.testing.assert_allclose(g_.astype(np.float64), w_.astype(np.float64), rtol=tol, atol=tol,
                                       err_msg=f"seed {seed}")


def test_weighted_lookups_are_left_alone_and_still_equal(tmp_path, seed):
    rng = np.random.default_rng(seed)
    t1 = tf.Variable(rng.standard_normal((40, 8)).astype(np.float32))
    t2 = tf.Variable(rng.standard_normal((40, 8)).astype(np.float32))
    sig = [tf.SparseTensorSpec([None, None], tf.int64), tf.SparseTensorSpec([None, None], tf.float32)]

    def model(sp, w):
        return tf.concat([tf.nn.embedding_lookup_sparse(t1, sp, None, combiner="mean"),
                          tf.nn.embedding_lookup_sparse(t2, sp, w, combiner="mean")], 1)

    gd, inputs, outputs = frozen(model, sig)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=4)
    assert report.replaced == 1 and report.found == 2, report.as_dict()
    assert report.left_alone == [{"node": report.left_alone[0]["node"], "idiom": "embedding_lookup_sparse (weighted)",
                                  "reason": "weighted lookups are not fused yet"}]
    assert sum(n.op == "SegmentSum" for n in new_gd.node) == sum(n.op == "SegmentSum" for n in gd.node)
    indices, ids, shape = sparse_batch(rng, 40, 10, 4, np.int64)
    weights = rng.uniform(0.5, 1.5, len(ids)).astype(np.float32)
    feeds = [indices, ids, shape, indices, weights, shape]
    for w_, g_ in zip(run(gd, inputs, outputs, feeds), run(new_gd, inputs, outputs, feeds)):
        np.testing.assert_allclose(g_, w_, rtol=1e-6, atol=1e-6)


def test_graph_without_embeddings_comes_back_unchanged(tmp_path):
    gd, _, _ = frozen(lambda x: tf.nn.relu(x) * 2.0, [tf.TensorSpec([None, 3], tf.float32)])
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=8, max_nnz=1)
    assert report.found == 0 and report.replaced == 0
    assert new_gd == gd
