"""The dense id matrix form of safe slots (a padded [rows, k] id matrix, ids
< 0 padding) against TensorFlow's safe_embedding_lookup_sparse over the same
matrix as a SparseTensor of every entry: TF prunes the negative ids (and the
weights <= 0 unless the combiner is sum) itself."""

import numpy as np
import pytest

import tiemb

tf = pytest.importorskip("tensorflow")

TOL = {np.float32: 1e-6, np.float16: 1e-3}
MAX_BATCH, MAX_NNZ = 64, 6


def tf_reference(table, ids, combiner, weights=None, default_id=None):
    rows, k = ids.shape
    idx = np.stack(np.meshgrid(np.arange(rows), np.arange(k), indexing="ij"), -1).reshape(-1, 2).astype(np.int64)
    sp = tf.SparseTensor(idx, ids.reshape(-1).astype(np.int64), [rows, k])
    w = None if weights is None else tf.SparseTensor(idx, weights.reshape(-1), [rows, k])
    t = tf.constant(table.astype(np.float32))
    return tf.nn.safe_embedding_lookup_sparse(t, sp, w, combiner=combiner, default_id=default_id).numpy()


def padded_matrix(rng, rows, k, vocab, id_dtype):
    ids = rng.integers(0, vocab, size=(rows, k)).astype(id_dtype)
    ids[rng.random((rows, k)) < 0.3] = -1        # padding anywhere in a row
    ids[::5] = -1                                # whole rows of padding
    ids[1::7, 0] = -3                            # any negative id is padding
    return ids


@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("default_id", [None, 3])
def test_matches_tf_safe_lookup(combiner, weighted, id_dtype, table_dtype, default_id, seed):
    rng = np.random.default_rng(seed)
    engine = tiemb.EmbeddingEngine(MAX_BATCH, 3, MAX_NNZ)
    tables = [rng.standard_normal((int(rng.integers(10, 500)), dim)).astype(table_dtype) for dim in (1, 8, 33)]
    slots = [tiemb.Slot(engine.add_table(t), combiner, "safe", default_id) for t in tables]
    group = engine.group(slots)
    ids = [padded_matrix(rng, int(rng.integers(1, MAX_BATCH + 1)), k, len(t), id_dtype)
           for t, k in zip(tables, (1, 3, MAX_NNZ))]
    weights = None
    if weighted:   # some <= 0: pruned unless the combiner is sum; values exact in float16
        weights = [np.round(rng.uniform(-0.5, 2.0, m.shape) * 8).astype(np.float32) / 8 for m in ids]
    outs = group.lookup(ids, weights=weights)
    for s, (got, table, m) in enumerate(zip(outs, tables, ids)):
        want = tf_reference(table, m, combiner, None if weights is None else weights[s], default_id)
        assert got.shape == (m.shape[0], table.shape[1])
        np.testing.assert_allclose(got.astype(np.float32), want, rtol=TOL[table_dtype], atol=TOL[table_dtype],
                                   err_msg=f"seed {seed}, slot {s}, {combiner}, ids {m.shape}")


def test_all_padding_and_empty_batch(seed):
    rng = np.random.default_rng(seed)
    engine = tiemb.EmbeddingEngine(MAX_BATCH, 2, MAX_NNZ)
    table = rng.standard_normal((20, 4)).astype(np.float32)
    group = engine.group([tiemb.Slot(engine.add_table(table), "mean", "safe"),
                          tiemb.Slot(engine.add_table(table), "sum", "safe", 7)])
    pad = np.full((5, 3), -1, np.int64)
    a, b = group.lookup([pad, pad])
    assert np.array_equal(a, np.zeros((5, 4), np.float32))          # divide_no_nan: zeros
    assert np.array_equal(b, np.repeat(table[7:8], 5, 0))           # default_id row
    a, b = group.lookup([np.zeros((0, 3), np.int64), np.zeros((4, 0), np.int64)])
    assert a.shape == (0, 4) and np.array_equal(b, np.repeat(table[7:8], 4, 0))


def test_bad_input_names_slot_and_value():
    engine = tiemb.EmbeddingEngine(8, 2, 4)
    table = np.ones((10, 2), np.float32)
    group = engine.group([tiemb.Slot(engine.add_table(table), "sum", "safe"),
                          tiemb.Slot(engine.add_table(table), "sum", "plain")])
    ok = np.zeros((2, 2), np.int64)
    bad = ok.copy()
    bad[1, 1] = 10
    with pytest.raises(ValueError, match=r"slot 0: ids\[1, 1\] = 10 is out of range \[0, 10\)"):
        group.lookup([bad, np.zeros(1, np.int64)], segment_ids=[None, np.zeros(1, np.int64)])
    with pytest.raises(ValueError, match=r"slot 0: ids_per_row = 5 exceeds max_nnz = 4"):
        group.lookup([np.zeros((2, 5), np.int64), np.zeros(1, np.int64)], segment_ids=[None, np.zeros(1, np.int64)])
    with pytest.raises(ValueError, match=r"slot 0: 9 output rows exceed max_batch_size = 8"):
        group.lookup([np.zeros((9, 1), np.int64), np.zeros(1, np.int64)], segment_ids=[None, np.zeros(1, np.int64)])
    with pytest.raises(ValueError, match=r"slot 1: the dense id matrix form .* is a safe-mode form"):
        group.lookup([ok, ok], segment_ids=[None, None])
