"""Gather mode (tf.gather / Keras Embedding): one output row per id, bit-exact."""

import numpy as np
import pytest

import tiemb


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16])
def test_gather_equals_numpy_take(id_dtype, table_dtype, seed):
    rng = np.random.default_rng(seed)
    tables = [rng.standard_normal((v, d)).astype(table_dtype) for v, d in ((50, 8), (7, 3), (1000, 16))]
    engine = tiemb.EmbeddingEngine(max_batch_size=16, slot_num=4, max_nnz=5)
    t = [engine.add_table(x) for x in tables]
    group = engine.group([tiemb.Slot(t[0], mode="gather"), tiemb.Slot(t[1], mode="gather"),
                          tiemb.Slot(t[2], "sum"), tiemb.Slot(t[2], mode="gather")])
    ids = [rng.integers(0, 50, (16, 5)).astype(id_dtype), rng.integers(0, 7, 16).astype(id_dtype),
           rng.integers(0, 1000, 9).astype(id_dtype), rng.integers(0, 1000, (4, 2)).astype(id_dtype)]
    seg = np.sort(rng.permutation(np.repeat(np.arange(4), 5))[:9]).astype(np.int64)   # at most max_nnz per sample
    out = group.lookup(ids, segment_ids=[None, None, seg, None])
    for s in (0, 1, 3):
        want = np.take(tables[[0, 1, 2, 2][s]], ids[s], axis=0)
        assert out[s].dtype == want.dtype and out[s].shape == want.shape
        np.testing.assert_array_equal(out[s], want)
    want_sum = np.zeros((seg[-1] + 1, 16))
    np.add.at(want_sum, seg, tables[2][ids[2]].astype(np.float64))
    np.testing.assert_allclose(out[2].astype(np.float64), want_sum, rtol=1e-3 if table_dtype == np.float16 else 1e-6,
                               atol=1e-3 if table_dtype == np.float16 else 1e-6)


def test_gather_mode_errors():
    engine = tiemb.EmbeddingEngine(max_batch_size=2, slot_num=2, max_nnz=3)
    t = engine.add_table(np.ones((5, 2), np.float32))
    g = engine.group([tiemb.Slot(t, mode="gather"), tiemb.Slot(t, "sum")])
    ok = [np.array([1, 2], np.int64), np.array([1], np.int64)]
    with pytest.raises(ValueError, match=r"slot 0: ids\[1\] = 5 is out of range \[0, 5\) of table 0"):
        g.lookup([np.array([1, 5], np.int64), ok[1]], segment_ids=[None, np.array([0], np.int64)])
    with pytest.raises(ValueError, match=r"slot 0: gather mode takes no segment_ids"):
        g.lookup(ok, segment_ids=[np.array([0, 1], np.int64), np.array([0], np.int64)])
    with pytest.raises(ValueError, match=r"slot 0: gather mode takes no weights"):
        g.lookup(ok, segment_ids=[None, np.array([0], np.int64)], weights=[np.ones(2, np.float32), None])
    with pytest.raises(ValueError, match=r"slot 0: 7 samples exceed max_batch_size = 2"):
        g.lookup([np.zeros(7, np.int64), ok[1]], segment_ids=[None, np.array([0], np.int64)])
    with pytest.raises(ValueError, match=r"slot 1: needs segment_ids or row_offsets"):
        g.lookup(ok)
    # [samples, k] ids: samples against max_batch_size, k ids per sample against max_nnz.
    with pytest.raises(ValueError, match=r"slot 0: 3 samples exceed max_batch_size = 2"):
        g.lookup([np.zeros((3, 1), np.int64), ok[1]], segment_ids=[None, np.array([0], np.int64)])
    with pytest.raises(ValueError, match=r"slot 0: every sample has 4 ids, more than max_nnz = 3"):
        g.lookup([np.zeros((1, 4), np.int64), ok[1]], segment_ids=[None, np.array([0], np.int64)])
    out, _ = g.lookup([np.zeros((2, 3), np.int64), ok[1]], segment_ids=[None, np.array([0], np.int64)])
    assert out.shape == (2, 3, 2)
