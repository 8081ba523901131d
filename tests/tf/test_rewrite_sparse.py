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


@pytest.mark.parametrize("fast", [False, True], ids=["unique", "fast_lookup"])
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_weighted_lookups_each_combiner(fast, table_dtype, tmp_path, seed):
    rng = np.random.default_rng(seed)
    tabs = [tf.Variable(rng.standard_normal((40, d)).astype(table_dtype)) for d in (8, 4, 5)]
    wdt = tf.float16 if table_dtype == np.float16 else tf.float32
    sig = [tf.SparseTensorSpec([None, None], tf.int64), tf.SparseTensorSpec([None, None], tf.float32)]

    def model(sp, w):
        w = tf.SparseTensor(w.indices, tf.cast(w.values, wdt), w.dense_shape)
        outs = [tf.nn.embedding_lookup_sparse(t, sp, w, combiner=c, allow_fast_lookup=fast)
                for t, c in zip(tabs, ("sum", "mean", "sqrtn"))]
        plain = tf.nn.embedding_lookup_sparse(tabs[0], sp, None, combiner="mean")
        return outs + [plain]

    gd, inputs, outputs = frozen(model, sig)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=4)
    assert report.replaced == 4 and report.left_alone == [], report.as_dict()
    ops = [n.op for n in new_gd.node]
    assert ops.count("TiembLookup") == 1
    assert not {"SegmentSum", "DivNoNan", "Unique", "SparseSegmentMean", "Mul"} & set(ops), ops
    for _ in range(3):
        indices, ids, shape = sparse_batch(rng, 40, 10, 4, np.int64)
        # Weights with zeros and negatives: plain mode keeps them (div_no_nan on zero sums).
        weights = rng.choice([-1.0, 0.0, 0.5, 1.0, 2.0], len(ids)).astype(np.float32)
        feeds = [indices, ids, shape, indices, weights, shape]
        tol = 1e-6 if table_dtype == np.float32 else 1e-3
        for w_, g_ in zip(run(gd, inputs, outputs, feeds), run(new_gd, inputs, outputs, feeds)):
            assert w_.dtype == g_.dtype and w_.shape == g_.shape
            np.testing.assert_allclose(g_.astype(np.float64), w_.astype(np.float64), rtol=tol, atol=tol,
                                       err_msg=f"seed {seed}")


def test_lookup_whose_inner_node_is_used_elsewhere_keeps_it(tmp_path, seed):
    """A gathered-rows tensor also used by other code: the lookup is replaced,
    the shared nodes stay, outputs stay equal."""
    rng = np.random.default_rng(seed)
    t = tf.constant(rng.standard_normal((30, 6)).astype(np.float32))
    sig = [tf.SparseTensorSpec([None, None], tf.int64)]

    def model(sp):
        out = tf.nn.embedding_lookup_sparse(t, sp, None, combiner="sum")
        return out, tf.reduce_sum(t) * tf.ones([1])   # the table used outside the lookup

    gd, inputs, outputs = frozen(model, sig)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=4)
    assert report.replaced == 1
    assert any(n.op == "Const" and len(n.attr["value"].tensor.tensor_shape.dim) == 2 for n in new_gd.node), \
        "the table constant is still needed by reduce_sum and must stay"
    feeds = list(sparse_batch(rng, 30, 9, 4, np.int64))
    for w_, g_ in zip(run(gd, inputs, outputs, feeds), run(new_gd, inputs, outputs, feeds)):
        np.testing.assert_allclose(g_, w_, rtol=1e-6, atol=1e-6)


def test_graph_without_embeddings_comes_back_unchanged(tmp_path):
    gd, _, _ = frozen(lambda x: tf.nn.relu(x) * 2.0, [tf.TensorSpec([None, 3], tf.float32)])
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=8, max_nnz=1)
    assert report.found == 0 and report.replaced == 0
    assert new_gd == gd


def _keras_wd(rng, vocabs, dims, k):
    import keras

    ids = keras.Input(shape=(len(vocabs),), dtype="int64")
    multi = keras.Input(shape=(k,), dtype="int64")
    embs = [keras.layers.Flatten()(keras.layers.Embedding(v, d)(ids[:, i:i + 1])) for i, (v, d) in
            enumerate(zip(vocabs, dims))]
    bag = keras.layers.Embedding(vocabs[0], dims[0])(multi)          # [batch, k, dim], unpooled
    pooled = keras.ops.mean(bag, axis=1)                              # pooled over the k ids
    wide = keras.layers.Flatten()(keras.layers.Embedding(vocabs[0], 1)(ids[:, :1]))
    deep = keras.layers.Dense(16, activation="relu")(keras.layers.Concatenate()(embs + [pooled]))
    out = keras.layers.Dense(1)(deep) + wide
    model = keras.Model([ids, multi], out)
    for w in model.weights:
        w.assign(rng.standard_normal(w.shape).astype(np.float32))
    return model


def test_keras_embeddings_are_fused(tmp_path, seed):
    rng = np.random.default_rng(seed)
    vocabs, dims, k = [100, 37, 500, 8], [8, 4, 16, 3], 5
    model = _keras_wd(rng, vocabs, dims, k)
    sig = [tf.TensorSpec([None, len(vocabs)], tf.int64), tf.TensorSpec([None, k], tf.int64)]
    gd, inputs, outputs = frozen(lambda a, b: model([a, b]), sig)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=k)
    assert report.replaced == 6 and report.left_alone == [], report.as_dict()
    ops = [n.op for n in new_gd.node]
    assert ops.count("TiembLookup") == 1 and "GatherV2" not in ops, ops
    for batch in (1, 7, 64):
        ids = np.stack([rng.integers(-v, v, batch) for v in vocabs], 1)   # negative ids: Keras wraps them
        multi = rng.integers(0, vocabs[0], (batch, k))
        want = run(gd, inputs, outputs, [ids, multi])
        got = run(new_gd, inputs, outputs, [ids, multi])
        for w_, g_ in zip(want, got):
            np.testing.assert_allclose(g_, w_, rtol=1e-6, atol=1e-6, err_msg=f"seed {seed}, batch {batch}")


def test_sparse_and_dense_lookups_share_one_op(tmp_path, seed):
    rng = np.random.default_rng(seed)
    t1 = tf.Variable(rng.standard_normal((40, 8)).astype(np.float32))
    t2 = tf.Variable(rng.standard_normal((20, 8)).astype(np.float32))
    sig = [tf.SparseTensorSpec([None, None], tf.int64), tf.TensorSpec([None], tf.int32)]

    def model(sp, dense):
        return tf.nn.embedding_lookup_sparse(t1, sp, None, combiner="sum")[:3] + tf.gather(t2, dense)[:3]

    gd, inputs, outputs = frozen(model, sig)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=4)
    assert report.replaced == 2 and [n.op for n in new_gd.node].count("TiembLookup") == 1
    indices, ids, shape = sparse_batch(rng, 40, 10, 4, np.int64)
    dense = rng.integers(0, 20, 6).astype(np.int32)
    feeds = [indices, ids, shape, dense]
    for w_, g_ in zip(run(gd, inputs, outputs, feeds), run(new_gd, inputs, outputs, feeds)):
        np.testing.assert_allclose(g_, w_, rtol=1e-6, atol=1e-6)


SAFE_LEFTOVERS = {"SparseFillEmptyRows", "Select", "SelectV2", "SparseSegmentSum", "SparseSegmentMean",
                  "SparseSegmentSqrtN", "SegmentSum", "Unique", "Where", "Tile"}


@pytest.mark.parametrize("default_id", [None, 3])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_safe_lookup_is_fused_and_equal(combiner, weighted, default_id, id_dtype, table_dtype, tmp_path, seed):
    """safe_embedding_lookup_sparse (what feature columns call), rank-2 input:
    pruning, row filling, the lookup, empty-row zeroing (or default_id) and
    the reshapes all become one safe slot. Outputs stay equal, invalid ids and
    weights <= 0 included."""
    rng = np.random.default_rng(seed)
    t = tf.Variable(rng.standard_normal((60, 8)).astype(table_dtype))
    tid = tf.as_dtype(id_dtype)
    # TensorFlow wants weights of the table's dtype (and computes in float32).
    half_weights = weighted and table_dtype == np.float16
    wdtype = np.float16 if half_weights else np.float32
    sig = [tf.SparseTensorSpec([None, None], tid), tf.SparseTensorSpec([None, None], tf.as_dtype(wdtype))]

    def model(sp, w):
        return tf.nn.safe_embedding_lookup_sparse(t, sp, w if weighted else None, combiner=combiner,
                                                  default_id=default_id)

    gd, inputs, outputs = frozen(model, sig)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=4)
    assert report.replaced == 1 and report.left_alone == [], report.as_dict()
    ops = {n.op for n in new_gd.node}
    assert not (SAFE_LEFTOVERS | {"SparseReshape", "Reshape"}) & ops, sorted(ops)
    for _ in range(3):
        indices, ids, shape = sparse_batch(rng, 60, 12, 4, id_dtype)
        ids[rng.random(len(ids)) < 0.2] = -1                       # pruned by the safe lookup
        weights = rng.choice([-1.0, 0.0, 0.5, 2.0], len(ids)).astype(wdtype)
        feeds = [indices, ids, shape, indices, weights, shape]
        for w_, g_ in zip(run(gd, inputs, outputs, feeds), run(new_gd, inputs, outputs, feeds)):
            assert w_.shape == g_.shape and w_.dtype == g_.dtype
            tol = 1e-6 if table_dtype == np.float32 else 1e-3
            np.testing.assert_allclose(g_.astype(np.float64), w_.astype(np.float64), rtol=tol, atol=tol,
                                       err_msg=f"seed {seed}")


@pytest.mark.parametrize("weighted", [False, True])
def test_safe_lookup_of_rank3_input_keeps_its_reshapes(weighted, tmp_path, seed):
    """A rank-3 sparse input ([batch, steps, ids]): the op reads the
    SparseReshape's outputs and the final Reshape back to [batch, steps, dim]
    stays; everything between them is fused."""
    rng = np.random.default_rng(seed)
    t = tf.Variable(rng.standard_normal((30, 4)).astype(np.float32))
    sig = [tf.SparseTensorSpec([None, None, None], tf.int64), tf.SparseTensorSpec([None, None, None], tf.float32)]

    def model(sp, w):
        return tf.nn.safe_embedding_lookup_sparse(t, sp, w if weighted else None, combiner="mean")

    gd, inputs, outputs = frozen(model, sig)
    new_gd, report = rewrite_sparse_lookups(gd, str(tmp_path / "store"), max_batch_size=64, max_nnz=8)
    assert report.replaced == 1 and report.left_alone == [], report.as_dict()
    ops = {n.op for n in new_gd.node}
    assert "SparseReshape" in ops and not SAFE_LEFTOVERS & ops, sorted(ops)
    for _ in range(3):
        indices2, ids, _ = sparse_batch(rng, 30, 12, 3, np.int64)        # 12 = 4 samples x 3 steps
        indices = np.stack([indices2[:, 0] // 3, indices2[:, 0] % 3, indices2[:, 1]], 1).astype(np.int64)
        shape = np.array([4, 3, 3], np.int64)
        ids[rng.random(len(ids)) < 0.2] = -1
        weights = rng.choice([-1.0, 0.5, 2.0], len(ids)).astype(np.float32)
        feeds = [indices, ids, shape, indices, weights, shape]
        for w_, g_ in zip(run(gd, inputs, outputs, feeds), run(new_gd, inputs, outputs, feeds)):
            assert w_.shape == g_.shape == (4, 3, 4)
            np.testing.assert_allclose(g_, w_, rtol=1e-6, atol=1e-6, err_msg=f"seed {seed}")
