"""Strided outputs (slot_request.out_row_stride) on the GPU: the TiembLookup
GPU kernel writing several slots side by side into one output (a fused
concatenation) gives what the CPU kernel (the CPU engine) gives, and the
concatenation of the slots' separate outputs."""

import numpy as np
import pytest

import tiemb
from oracle import random_slot

pytestmark = pytest.mark.gpu

tf = pytest.importorskip("tensorflow")

MAX_BATCH, MAX_NNZ = 64, 5


def _gpu_kernel():
    if not tiemb.build_info()["tf_gpu_kernel"]:
        pytest.skip("this build has no TiembLookup GPU kernel (TensorFlow without CUDA)")
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("TensorFlow sees no GPU")


# Column layouts: unaligned offsets (scalar stores), 16-byte aligned rows
# (vector stores), a dim-1 slot between wider ones.
LAYOUTS = {"unaligned": [4, 3, 8, 16], "aligned": [8, 8, 16], "with-dim-1": [16, 1, 4]}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("mode", ["safe", "plain"])
def test_gpu_strided_outputs_match_the_cpu_engine(layout, table_dtype, mode, tmp_path, seed):
    _gpu_kernel()
    from tiemb import tf_ops

    rng = np.random.default_rng(seed)
    dims = LAYOUTS[layout]
    cases = [random_slot(rng, dim=d, table_dtype=table_dtype, id_dtype=np.int64,
                         combiner=str(rng.choice(["sum", "mean", "sqrtn"])), mode=mode,
                         weighted=bool(rng.random() < 0.5), max_batch=MAX_BATCH, max_nnz=MAX_NNZ) for d in dims]
    if mode == "plain":      # one row count for all: every slot gets an id in the last row
        for c in cases:
            c.ids = np.append(c.ids, np.int64(0))
            c.segment_ids = np.append(c.segment_ids, np.int64(MAX_BATCH - 1))
            if c.weights is not None:
                c.weights = np.append(c.weights, np.float32(1.0))
    else:
        for c in cases:
            c.num_rows = MAX_BATCH
    store = str(tmp_path / "store")
    tf_ops.write_store(store, {f"t{i}.tiemb": c.table for i, c in enumerate(cases)}, max_batch_size=MAX_BATCH,
                       slot_num=len(cases), max_nnz=MAX_NNZ)
    out_t = tf.float16 if table_dtype == np.float16 else tf.float32
    offsets = list(np.cumsum([0] + dims[:-1]))
    kw = dict(tables=[f"t{i}.tiemb" for i in range(len(cases))], dims=dims, combiners=[c.combiner for c in cases],
              modes=[mode] * len(cases), weights=[None if c.weights is None else c.weights for c in cases],
              num_rows=[c.num_rows for c in cases])

    def run(device, fused):
        with tf.device(device):
            ids = [tf.constant(c.ids) for c in cases]
            segs = [tf.constant(c.segment_ids) for c in cases]
            extra = dict(slot_outputs=[0] * len(cases), slot_offsets=offsets, out_types=[out_t]) if fused else \
                dict(out_types=[out_t] * len(cases))
            return [t.numpy() for t in tf_ops.lookup(store, ids, segs, **kw, **extra)]

    cpu_fused = run("/CPU:0", True)[0]
    cpu_separate = np.concatenate(run("/CPU:0", False), axis=1)
    gpu_fused = run("/GPU:0", True)[0]
    np.testing.assert_array_equal(cpu_fused, cpu_separate)
    tol = 1e-3 if table_dtype == np.float16 else 1e-6
    assert gpu_fused.shape == cpu_fused.shape and gpu_fused.dtype == cpu_fused.dtype
    np.testing.assert_allclose(gpu_fused.astype(np.float32), cpu_fused.astype(np.float32), rtol=tol, atol=tol)
