"""The GPU engine cache keys on the store's content id too (issue 11): a
replaced store directory is a new engine; a damaged table is refused."""

import os
import shutil

import numpy as np
import pytest

import tiemb
from tiemb import tf_ops

pytestmark = pytest.mark.gpu


def _sum_rows(engine, ids):
    group = engine.group([tiemb.Slot(0, "sum", "plain")])
    out = group.lookup([np.asarray(ids, np.int64)], weights=[None], segment_ids=[np.zeros(len(ids), np.int64)],
                       num_rows=[None])
    return np.asarray(out[0])


def test_replaced_store_is_a_new_gpu_engine(tmp_path):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((20, 8)).astype(np.float32) for _ in range(2))
    p = str(tmp_path / "p")
    tf_ops.write_store(p, {"t.tiemb": a}, max_batch_size=8, slot_num=1, max_nnz=4)
    engine_a = tiemb.GpuEmbeddingEngine.from_store(p)
    np.testing.assert_allclose(_sum_rows(engine_a, [3]), a[[3]], rtol=1e-6)
    tf_ops.write_store(str(tmp_path / "q"), {"t.tiemb": b}, max_batch_size=8, slot_num=1, max_nnz=4)
    shutil.rmtree(p)
    os.rename(str(tmp_path / "q"), p)
    engine_b = tiemb.GpuEmbeddingEngine.from_store(p)
    assert engine_b._engine.address != engine_a._engine.address, "the replaced store's engine served the new store"
    np.testing.assert_allclose(_sum_rows(engine_b, [3]), b[[3]], rtol=1e-6)
    np.testing.assert_allclose(_sum_rows(engine_a, [3]), a[[3]], rtol=1e-6)


def test_damaged_table_is_refused_by_the_gpu_engine(tmp_path):
    p = str(tmp_path / "p")
    tf_ops.write_store(p, {"t.tiemb": np.ones((20, 8), np.float32)}, max_batch_size=8, slot_num=1, max_nnz=4)
    path = os.path.join(p, "t.tiemb")
    data = bytearray(open(path, "rb").read())
    data[100] ^= 1
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=r"t.tiemb: checksum mismatch"):
        tiemb.GpuEmbeddingEngine.from_store(p)
