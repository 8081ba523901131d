"""The XLA FFI lookup handler (python/xla_ffi.cpp) called through jax's
public FFI API, outside any bundle: fused outputs, in-place column and
sparse-index reads, plain rows padded with zeros, errors naming the slot;
TensorFlow computes the expected values."""

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the XLA FFI handlers are registered with jax")
tf = pytest.importorskip("tensorflow")

from tiemb import _C  # noqa: E402
from tiemb.serving import xla  # noqa: E402
from tiemb.tf_ops import write_store  # noqa: E402

pytestmark = pytest.mark.skipif(not hasattr(_C, "xla_ffi_targets"),
                                reason="this build has no XLA FFI handlers (built without jax)")

ROWS_A, DIM_A, ROWS_B, DIM_B, BATCH = 50, 4, 30, 8, 6
SUM, MEAN, PLAIN, SAFE, GATHER, F32 = 0, 1, 0, 1, 2, 0     # csrc/core/types.h


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    tables = {"a.tiemb": rng.standard_normal((ROWS_A, DIM_A)).astype(np.float32),
              "b.tiemb": rng.standard_normal((ROWS_B, DIM_B)).astype(np.float32)}
    write_store(str(tmp_path), tables, max_batch_size=BATCH, slot_num=3, max_nnz=4)
    return str(tmp_path), tables


def make_plan(store_dir):
    # Operands: 0 an id matrix [BATCH, 3]; 1 sparse ids [n]; 2 sparse indices [n, 2].
    # Output 0: slot 0 (gather of column 1, table a, Keras wrapping) and slot 2 (gather of column 0, table b)
    # side by side; output 1: slot 1 (embedding_lookup_sparse mean over table b, plain rows).
    wiring = [[0, 1, -1, -1, -1, -1, 0, 0], [1, -1, -1, 2, 0, -1, 1, 0], [0, 0, -1, -1, -1, -1, 0, DIM_A]]
    return _C.XlaLookupPlan("cpu", store_dir, 0, ["a.tiemb", "b.tiemb", "b.tiemb"], [SUM, MEAN, SUM],
                            [GATHER, PLAIN, GATHER], [-1, -1, -1], [F32] * 3, [True, False, False],
                            [DIM_A, DIM_B, DIM_B], wiring, [DIM_A + DIM_B, DIM_B])


def call(plan, ids, sp_ids, sp_idx):
    xla.register_lookup_target("cpu")
    out = (jax.ShapeDtypeStruct((BATCH, DIM_A + DIM_B), np.float32), jax.ShapeDtypeStruct((BATCH, DIM_B), np.float32))
    with xla._x64(jax):
        fn = jax.jit(lambda a, b, c: jax.ffi.ffi_call(xla.LOOKUP_TARGET, out)(a, b, c, handle=np.int64(plan.handle)))
        return [np.asarray(r) for r in fn(ids, sp_ids, sp_idx)]


def inputs(rng):
    ids = np.stack([rng.integers(0, ROWS_B, BATCH), rng.integers(-ROWS_A, ROWS_A, BATCH),
                    rng.integers(0, 5, BATCH)], 1).astype(np.int64)
    rows = np.array([0, 0, 1, 3, 3, 3])       # samples 2, 4 and 5 have no ids: zeros, as TensorFlow's mean gives
    idx = np.stack([rows, np.arange(rows.size)], 1).astype(np.int64)
    return ids, rng.integers(0, ROWS_B, rows.size).astype(np.int64), idx


def test_handler_matches_tensorflow(store):
    store_dir, tables = store
    plan = make_plan(store_dir)
    ids, sp_ids, sp_idx = inputs(np.random.default_rng(1))
    fused, pooled = call(plan, ids, sp_ids, sp_idx)
    wrapped = np.where(ids[:, 1] < 0, ids[:, 1] + ROWS_A, ids[:, 1])
    want_fused = np.concatenate([tf.gather(tables["a.tiemb"], wrapped).numpy(),
                                 tf.gather(tables["b.tiemb"], ids[:, 0]).numpy()], 1)
    sp = tf.SparseTensor(sp_idx, sp_ids, [BATCH, 8])
    want_pooled = tf.nn.embedding_lookup_sparse(tables["b.tiemb"], sp, None, combiner="mean").numpy()
    want_pooled = np.concatenate([want_pooled, np.zeros((BATCH - want_pooled.shape[0], DIM_B), np.float32)])
    np.testing.assert_allclose(fused, want_fused, rtol=1e-6)
    np.testing.assert_allclose(pooled, want_pooled, rtol=1e-6, atol=1e-7)


def test_bad_input_names_the_slot(store):
    store_dir, _ = store
    plan = make_plan(store_dir)
    ids, sp_ids, sp_idx = inputs(np.random.default_rng(2))
    ids[3, 0] = ROWS_B + 9
    with pytest.raises(Exception, match=rf"tiemb_lookup handle {plan.handle}: slot 2: .*{ROWS_B + 9}"):
        call(plan, ids, sp_ids, sp_idx)
    ids[3, 0] = 0
    sp_idx[1, 0] = 7                        # a segment beyond the 6 rows of the result
    with pytest.raises(Exception, match=rf"tiemb_lookup handle {plan.handle}: slot 1: .*"):
        call(plan, ids, sp_ids, sp_idx)


def test_unknown_handle_and_bad_plans(store):
    store_dir, _ = store
    plan = make_plan(store_dir)
    handle = plan.handle
    ids, sp_ids, sp_idx = inputs(np.random.default_rng(3))
    del plan                                 # unregistered with its Python object
    stale = type("P", (), {"handle": handle})()
    with pytest.raises(Exception, match=f"no plan with handle {handle}"):
        call(stale, ids, sp_ids, sp_idx)
    with pytest.raises(ValueError, match="platform must be 'cpu' or 'gpu', got 'tpu'"):
        _C.XlaLookupPlan("tpu", store_dir, 0, ["a.tiemb"], [SUM], [GATHER], [-1], [F32], [False], [DIM_A],
                         [[0, -1, -1, -1, -1, -1, 0, 0]], [DIM_A])
    with pytest.raises(ValueError, match="slot 0: columns 0..4 exceed output 0's width 3"):
        _C.XlaLookupPlan("cpu", store_dir, 0, ["a.tiemb"], [SUM], [GATHER], [-1], [F32], [False], [DIM_A],
                         [[0, -1, -1, -1, -1, -1, 0, 0]], [3])
    with pytest.raises(ValueError, match="slot 0: table b.tiemb has dimension 8 but the bundle says 4"):
        _C.XlaLookupPlan("cpu", store_dir, 0, ["b.tiemb"], [SUM], [GATHER], [-1], [F32], [False], [DIM_A],
                         [[0, -1, -1, -1, -1, -1, 0, 0]], [DIM_A])
