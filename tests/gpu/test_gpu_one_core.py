"""One GPU engine per store and device per process (issue 12, item 1): every
opening of a store, through any module of the process, gets the engine in the
core's one registry, and device memory grows by the tables once."""

import numpy as np
import pytest

import tiemb
from tiemb import _C
from tiemb import store as table_store

pytestmark = pytest.mark.gpu

TABLE_ROWS, TABLE_DIM = 400_000, 128   # 204.8 MB of float32, resident on the device


def _free_device_bytes():
    cp = pytest.importorskip("cupy")
    cp.cuda.runtime.deviceSynchronize()
    return cp.cuda.runtime.memGetInfo()[0]


def test_store_opened_twice_is_one_gpu_engine_and_one_copy_of_its_tables(tmp_path):
    store = str(tmp_path / "store")
    rng = np.random.default_rng(0)
    table_store.write_store(store, {"t.tiemb": rng.standard_normal((TABLE_ROWS, TABLE_DIM), dtype=np.float32)},
                            max_batch_size=8, slot_num=1, max_nnz=4, tiers={"cache_percentage": 1.0})
    table_bytes = TABLE_ROWS * TABLE_DIM * 4
    free0 = _free_device_bytes()
    first = tiemb.GpuEmbeddingEngine.from_store(store)
    free1 = _free_device_bytes()
    second = tiemb.GpuEmbeddingEngine.from_store(store)
    free2 = _free_device_bytes()
    assert second._engine.address == first._engine.address
    (entry,) = [e for e in _C.live_store_engines() if e["address"] == first._engine.address]
    assert entry["device"] == 0 and entry["users"] >= 2, entry
    assert free0 - free1 >= table_bytes, (free0, free1)
    assert free1 - free2 < 0.25 * table_bytes, (free1, free2)
    rows = first.group([tiemb.Slot(0, "sum", "plain")]).lookup(
        [np.array([3, 5], np.int64)], segment_ids=[np.array([0, 0], np.int64)])[0]
    table = _C.read_table_rows(f"{store}/t.tiemb", [3, 5])[3]
    np.testing.assert_allclose(np.asarray(rows)[0], table[0] + table[1], rtol=1e-5)


def test_device_out_of_memory_is_runtime_error_not_value_error():
    """An allocation the device cannot satisfy (the device filled first, so
    the size does not depend on the GPU) raises RuntimeError naming the CUDA
    error, not the ValueError of bad input (issue 12, item 4)."""
    cp = pytest.importorskip("cupy")
    engine = tiemb.GpuEmbeddingEngine(max_batch_size=1 << 16, slot_num=1, max_nnz=256)  # 16 M ids: ~320 MB of buffers
    engine.add_table(np.ones((16, 8), np.float32))
    filler = []
    try:
        free = cp.cuda.runtime.memGetInfo()[0]
        while free > (64 << 20):   # leave 64 MB: the group's buffers cannot fit
            chunk = max(free - (64 << 20), 1 << 20)
            filler.append(cp.cuda.runtime.malloc(chunk))
            free = cp.cuda.runtime.memGetInfo()[0]
        with pytest.raises(RuntimeError, match="cudaErrorMemoryAllocation") as info:
            engine.group([tiemb.Slot(0, "sum", "plain")])
        assert not isinstance(info.value, ValueError)
    finally:
        for p in filler:
            cp.cuda.runtime.free(p)
