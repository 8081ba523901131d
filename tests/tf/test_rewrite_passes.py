"""The rewriter's parts (tiemb/rewrite/driver.py, base.py, splice.py): the
driver returns the tables instead of writing them, passes run alone, a
refused match leaves the graph and says why, the splice keeps what others
read. TensorFlow on the original graph is the oracle for every output."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from test_rewrite_sparse import frozen, run, sparse_batch  # noqa: E402
from tiemb import tf_ops  # noqa: E402
from tiemb.rewrite import driver  # noqa: E402
from tiemb.rewrite.fusion_gather import RowGatherFusion  # noqa: E402
from tiemb.rewrite.fusion_sparse import SparseLookupFusion  # noqa: E402
from tiemb.rewrite.splice import unused_candidates  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


def _two_lookups(rng):
    """A model with a sparse lookup (mean) and a row gather, its tables as variables."""
    big = tf.Variable(rng.standard_normal((40, 8)).astype(np.float32))
    small = tf.Variable(rng.standard_normal((25, 4)).astype(np.float32))
    sig = [tf.SparseTensorSpec([None, None], tf.int64), tf.TensorSpec([None], tf.int64)]

    def model(sp, ids):
        pooled = tf.nn.embedding_lookup_sparse(big, sp, None, combiner="mean")
        return pooled, tf.gather(small, ids) * 2.0

    gd, inputs, outputs = frozen(model, sig)
    return gd, inputs, outputs, {"big": big.numpy(), "small": small.numpy()}


def _feeds(rng, rows):
    indices, ids, shape = sparse_batch(rng, 40, rows, 4, np.int64)
    # sparse_batch leaves trailing rows empty: the lookup's output then has
    # fewer rows, so the dense ids are sized from the dense_shape only.
    return [indices, ids, shape, rng.integers(0, 25, rows).astype(np.int64)]


def _assert_same(gd, new_gd, inputs, outputs, feeds):
    want = run(gd, inputs, outputs, feeds)
    got = run(new_gd, inputs, outputs, feeds)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_driver_returns_the_tables_and_writes_nothing(tmp_path, seed):
    rng = np.random.default_rng(seed)
    gd, inputs, outputs, tables = _two_lookups(rng)
    store = tmp_path / "store"
    result = driver.rewrite(gd, str(store), max_batch_size=64, max_nnz=4)
    assert not store.exists(), "the driver must not write the store"
    assert result.report.replaced == 2 and len(result.lookups) == 2, result.report.as_dict()
    s = result.store
    assert (s.max_batch_size, s.max_nnz, s.slot_num) == (64, 4, result.report.features)
    got = sorted(s.tables.values(), key=lambda a: a.shape)
    want = sorted(tables.values(), key=lambda a: a.shape)
    assert len(got) == 2 and all(np.array_equal(g, w) and g.dtype == w.dtype for g, w in zip(got, want))
    tf_ops.write_store(str(store), s.tables, max_batch_size=s.max_batch_size, slot_num=s.slot_num,
                       max_nnz=s.max_nnz)
    _assert_same(gd, result.graph_def, inputs, outputs, _feeds(rng, 11))


def test_half_tables_are_returned_as_float16(tmp_path, seed):
    rng = np.random.default_rng(seed)
    gd, _, _, tables = _two_lookups(rng)
    result = driver.rewrite(gd, None, max_batch_size=8, max_nnz=4, half_tables=True)
    got = sorted(result.store.tables.values(), key=lambda a: a.shape)
    want = sorted(tables.values(), key=lambda a: a.shape)
    assert all(g.dtype == np.float16 and np.array_equal(g, w.astype(np.float16)) for g, w in zip(got, want))


@pytest.mark.parametrize("only", ["gather", "sparse"])
def test_one_pass_alone_rewrites_a_correct_part(only, tmp_path, seed):
    """Passes are independent: the row-gather pass alone fuses every row
    gather (the one inside the sparse lookup too, whose reduction stays a
    TensorFlow op); the sparse pass alone leaves the dense gather. Either
    partial rewrite computes what TensorFlow computes."""
    rng = np.random.default_rng(seed)
    gd, inputs, outputs, _ = _two_lookups(rng)
    passes = (RowGatherFusion,) if only == "gather" else (SparseLookupFusion,)
    store = str(tmp_path / "store")
    result = driver.rewrite(gd, store, max_batch_size=64, max_nnz=4, passes=passes)
    ops = [n.op for n in result.graph_def.node]
    idioms = [lk["idiom"] for lk in result.report.lookups]
    if only == "gather":
        assert idioms == ["gather", "gather"] and "SparseSegmentMean" in ops, idioms
    else:
        assert idioms == ["embedding_lookup_sparse"] and "SparseSegmentMean" not in ops and "GatherV2" in ops
    s = result.store
    tf_ops.write_store(store, s.tables, max_batch_size=s.max_batch_size, slot_num=s.slot_num, max_nnz=s.max_nnz)
    _assert_same(gd, result.graph_def, inputs, outputs, _feeds(rng, 9))


def test_refused_match_is_reported_and_the_graph_left_alone(tmp_path, seed):
    """A SparseSegmentSum over rows that are not a table is the idiom's anchor
    but no lookup: the report names the node, the idiom and the reason; the
    graph comes back unchanged and nothing is to be stored."""
    rng = np.random.default_rng(seed)
    w = tf.constant(rng.standard_normal((3, 5)).astype(np.float32))
    sig = [tf.TensorSpec([None, 3], tf.float32), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)]

    def model(x, ids, seg):
        return tf.sparse.segment_sum(tf.matmul(x, w), ids, seg)

    gd, _, _ = frozen(model, sig)
    result = driver.rewrite(gd, str(tmp_path / "store"), max_batch_size=8, max_nnz=4)
    seg_node = next(n.name for n in gd.node if n.op == "SparseSegmentSum")
    assert result.report.left_alone == [{"node": seg_node, "idiom": "embedding_lookup_sparse",
                                         "reason": "data comes from MatMul, not a table or a gather from one"}]
    assert result.report.found == 1 and result.report.replaced == 0
    assert result.graph_def == gd and result.store is None


def test_splice_removes_only_candidates_nobody_reads():
    from tensorflow.core.framework import node_def_pb2

    def node(name, *inputs):
        return node_def_pb2.NodeDef(name=name, op="Identity", input=list(inputs))

    table, shared, inner, user = node("table"), node("shared", "table"), node("inner", "shared"), node("user", "shared")
    op = node("op", "^inner")          # a control edge does not keep a node
    kept, removed = unused_candidates([table, shared, inner, user], [op], {"table", "shared", "inner"})
    assert [n.name for n in kept] == ["table", "shared", "user"] and removed == {"inner"}
