"""The TiembLookup TensorFlow op against TensorFlow's own lookups."""

import itertools

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from tiemb import tf_ops  # noqa: E402
from oracle import assert_matches_tf, random_slot  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

TOL = {np.float32: 1e-6, np.float16: 1e-3}
MAX_BATCH, MAX_NNZ = 64, 5


def make_store(tmp_path, cases):
    store = str(tmp_path / "store")
    tf_ops.write_store(store, {f"t{i}.tiemb": c.table for i, c in enumerate(cases)},
                       max_batch_size=MAX_BATCH, slot_num=max(26, len(cases)), max_nnz=MAX_NNZ)
    return store


def run_op(store, cases, *, graph=False):
    kw = dict(tables=[f"t{i}.tiemb" for i in range(len(cases))], dims=[c.table.shape[1] for c in cases],
              combiners=[c.combiner for c in cases], modes=[c.mode for c in cases],
              default_ids=[-1 if c.default_id is None else c.default_id for c in cases],
              out_types=[tf.float16 if c.table.dtype == np.float16 else tf.float32 for c in cases])
    weights = [None if c.weights is None else tf.constant(c.weights) for c in cases]
    rows = [tf.constant(c.num_rows, tf.int64) for c in cases]
    if not graph:
        return [t.numpy() for t in tf_ops.lookup(store, [tf.constant(c.ids) for c in cases],
                                                 [tf.constant(c.segment_ids) for c in cases],
                                                 weights=weights, num_rows=rows, **kw)]

    # In a tf.function with the ids as graph inputs (what a served model does).
    @tf.function
    def f(ids, segs):
        return tf_ops.lookup(store, ids, segs, weights=weights, num_rows=rows, **kw)

    return [t.numpy() for t in f([tf.constant(c.ids) for c in cases], [tf.constant(c.segment_ids) for c in cases])]


@pytest.mark.parametrize("num_slots", [1, 26])
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16], ids=["f32", "f16"])
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("combiner,mode,weighted", list(itertools.product(
    ["sum", "mean", "sqrtn"], ["plain", "safe"], [False, True])))
def test_op_matches_tf(combiner, mode, weighted, id_dtype, table_dtype, num_slots, tmp_path, seed):
    rng = np.random.default_rng(seed)
    cases = [random_slot(rng, dim=int(rng.choice([1, 4, 16, 128])), table_dtype=table_dtype, id_dtype=id_dtype,
                         combiner=combiner, mode=mode, weighted=weighted, max_batch=MAX_BATCH, max_nnz=MAX_NNZ,
                         default_id=(mode == "safe" and rng.random() < 0.5)) for _ in range(num_slots)]
    store = make_store(tmp_path, cases)
    for graph in (False, True):
        for s, (got, case) in enumerate(zip(run_op(store, cases, graph=graph), cases)):
            assert_matches_tf(got, case, TOL[table_dtype],
                              f"seed {seed}, slot {s}, graph={graph} ({combiner}, {mode}, w={weighted})")


def test_shape_function(tmp_path, seed):
    rng = np.random.default_rng(seed)
    cases = [random_slot(rng, dim=8, table_dtype=np.float32, id_dtype=np.int64, combiner="sum", mode=m,
                         weighted=False) for m in ("plain", "safe")]
    store = make_store(tmp_path, cases)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64)] * 4)
    def f(i0, i1, s0, s1):
        outs = tf_ops.lookup(store, [i0, i1], [s0, s1], tables=["t0.tiemb", "t1.tiemb"], dims=[8, 8],
                             combiners=["sum", "sum"], modes=["plain", "safe"],
                             num_rows=[None, tf.constant(37, tf.int64)])
        assert outs[0].shape.as_list() == [None, 8], outs[0].shape
        assert outs[1].shape.as_list() == [37, 8], outs[1].shape
        return outs

    f.get_concrete_function()


def test_op_errors_name_the_slot(tmp_path, seed):
    rng = np.random.default_rng(seed)
    case = random_slot(rng, dim=4, table_dtype=np.float32, id_dtype=np.int64, combiner="sum", mode="plain",
                       weighted=False, vocab=50)
    store = make_store(tmp_path, [case])
    kw = dict(tables=["t0.tiemb"], dims=[4], combiners=["sum"], modes=["plain"])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: ids\[0\] = 50 is out of range \[0, 50\)"):
        tf_ops.lookup(store, [tf.constant([50], tf.int64)], [tf.constant([0], tf.int64)], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: segment_ids must be sorted"):
        tf_ops.lookup(store, [tf.constant([1, 2], tf.int64)], [tf.constant([1, 0], tf.int64)], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"store.json: No such file"):
        tf_ops.lookup(str(tmp_path / "nowhere"), [tf.constant([1], tf.int64)], [tf.constant([0], tf.int64)], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"has no table 'missing.tiemb'"):
        tf_ops.lookup(store, [tf.constant([1], tf.int64)], [tf.constant([0], tf.int64)],
                      **{**kw, "tables": ["missing.tiemb"]})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: table t0.tiemb has dimension 4 but the op expects 5"):
        tf_ops.lookup(store, [tf.constant([1], tf.int64)], [tf.constant([0], tf.int64)], **{**kw, "dims": [5]})
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: combiner must be sum, mean or sqrtn, got 'max'"):
        tf_ops.lookup(store, [tf.constant([1], tf.int64)], [tf.constant([0], tf.int64)],
                      **{**kw, "combiners": ["max"]})


def test_one_engine_per_store_shared_by_ops(tmp_path, seed):
    """Two ops over one store, used from a graph and eagerly, agree with TF."""
    rng = np.random.default_rng(seed)
    cases = [random_slot(rng, dim=16, table_dtype=np.float32, id_dtype=np.int64, combiner="mean", mode="safe",
                         weighted=True) for _ in range(2)]
    store = make_store(tmp_path, cases)
    a = run_op(store, cases, graph=True)
    b = run_op(store, cases, graph=False)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_store_manifest_round_trip_and_errors(tmp_path):
    d = str(tmp_path / "s")
    tf_ops.write_store(d, {"a.tiemb": np.ones((3, 2), np.float32)}, max_batch_size=8, slot_num=2, max_nnz=3)
    got = tiemb._C.read_store_manifest(d)
    assert {k: got[k] for k in ("max_batch_size", "slot_num", "max_nnz", "tables")} == dict(
        max_batch_size=8, slot_num=2, max_nnz=3, tables=["a.tiemb"])
    with open(d + "/store.json", "a") as f:
        f.write("colour blue\n")
    with pytest.raises(ValueError, match=r"store.json: not valid JSON \(.*parse error at line 23, column 1.*"
                                         r"expected end of input\): the description is damaged"):
        tiemb._C.read_store_manifest(d)
    with pytest.raises(ValueError, match=r"table name must be a plain file name"):
        tf_ops.write_store(d, {"../x": np.ones((3, 2), np.float32)}, max_batch_size=8, slot_num=2, max_nnz=3)


def test_gather_slots_equal_tf_gather(tmp_path, seed):
    rng = np.random.default_rng(seed)
    tables = {"a.tiemb": rng.standard_normal((30, 6)).astype(np.float32),
              "b.tiemb": rng.standard_normal((9, 4)).astype(np.float16)}
    store = str(tmp_path / "store")
    tf_ops.write_store(store, tables, max_batch_size=8, slot_num=2, max_nnz=4)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64), tf.TensorSpec([None], tf.int32)])
    def f(i0, i1):
        no_seg = tf.zeros([0], tf.int64)
        outs = tf_ops.lookup(store, [i0, i1], [no_seg, no_seg], tables=["a.tiemb", "b.tiemb"], dims=[6, 4],
                             combiners=["sum", "sum"], modes=["gather", "gather"],
                             out_types=[tf.float32, tf.float16])
        assert outs[0].shape.as_list() == [None, 3, 6] and outs[1].shape.as_list() == [None, 4]
        return outs

    i0 = rng.integers(0, 30, (8, 3))
    i1 = rng.integers(0, 9, 5).astype(np.int32)
    a, b = f(tf.constant(i0), tf.constant(i1))
    np.testing.assert_array_equal(a.numpy(), tf.gather(tables["a.tiemb"], i0).numpy())
    np.testing.assert_array_equal(b.numpy(), tf.gather(tables["b.tiemb"], i1).numpy())


def test_gather_slots_read_matrix_columns_and_wrap_negative_ids(tmp_path, seed):
    """What a Keras embedding layer becomes: every slot reads one column of
    the same id matrix in place, negative ids index from the end."""
    rng = np.random.default_rng(seed)
    tables = {"a.tiemb": rng.standard_normal((30, 6)).astype(np.float32),
              "b.tiemb": rng.standard_normal((9, 1)).astype(np.float16)}
    store = str(tmp_path / "store")
    tf_ops.write_store(store, tables, max_batch_size=16, slot_num=3, max_nnz=1)
    for dtype in (np.int32, np.int64):
        ids = np.stack([rng.integers(-30, 30, 16), rng.integers(0, 9, 16), rng.integers(-9, 9, 16)], 1).astype(dtype)
        no_seg = tf.zeros([0], tf.int64)
        outs = tf_ops.lookup(store, [tf.constant(ids)] * 3, [no_seg] * 3, tables=["a.tiemb", "b.tiemb", "b.tiemb"],
                             dims=[6, 1, 1], combiners=["sum"] * 3, modes=["gather"] * 3, id_columns=[0, 1, 2],
                             wrap_negative=[True, False, True], out_types=[tf.float32, tf.float32, tf.float16])
        for out, (name, col) in zip(outs, [("a.tiemb", 0), ("b.tiemb", 1), ("b.tiemb", 2)]):
            t = tables[name]
            want = t[np.where(ids[:, col] < 0, ids[:, col] + len(t), ids[:, col])]
            assert out.shape == (16, t.shape[1])
            np.testing.assert_array_equal(out.numpy(), want.astype(out.dtype.as_numpy_dtype))
    no_seg = tf.zeros([0], tf.int64)
    bad = np.zeros((4, 2), np.int64)
    bad[2, 1] = -31
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: ids\[2\] = -31 is out of range \[-30, 30\)"):
        tf_ops.lookup(store, [tf.constant(bad)], [no_seg], tables=["a.tiemb"], dims=[6], combiners=["sum"],
                      modes=["gather"], id_columns=[1], wrap_negative=[True])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: ids\[0\] = -1 is out of range \[0, 30\)"):
        tf_ops.lookup(store, [tf.constant(-np.ones((4, 2), np.int64))], [no_seg], tables=["a.tiemb"], dims=[6],
                      combiners=["sum"], modes=["gather"], id_columns=[1])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: ids must be a matrix with more than 2 columns"):
        tf_ops.lookup(store, [tf.constant(bad)], [no_seg], tables=["a.tiemb"], dims=[6], combiners=["sum"],
                      modes=["gather"], id_columns=[2])


def test_cpu_threads_from_the_environment(tmp_path):
    """TIEMB_CPU_THREADS sizes the op's lookup threads; a bad value is an error that says what it wants."""
    import os
    import subprocess
    import sys

    store = str(tmp_path / "store")
    tf_ops.write_store(store, {"a.tiemb": np.ones((3, 2), np.float32)}, max_batch_size=4, slot_num=1, max_nnz=1)
    code = ("import sys, tensorflow as tf, tiemb\n"
            "from tiemb import tf_ops\n"
            "out = tf_ops.lookup(sys.argv[1], [tf.constant([0, 2], tf.int64)], [tf.zeros([0], tf.int64)],\n"
            "                    tables=['a.tiemb'], dims=[2], combiners=['sum'], modes=['gather'])\n"
            "print(float(tf.reduce_sum(out[0])))\n")
    for value, ok in (("1", True), ("0", True), ("two", False), ("-3", False)):
        proc = subprocess.run([sys.executable, "-c", code, store], capture_output=True, text=True,
                              env={**os.environ, "TIEMB_CPU_THREADS": value, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd="/")
        if ok:
            assert proc.returncode == 0 and proc.stdout.strip() == "4.0", proc.stderr[-2000:]
        else:
            assert proc.returncode != 0 and f"TIEMB_CPU_THREADS must be a thread count (0 = all cores), got '{value}'" \
                in proc.stderr, proc.stderr[-2000:]


def test_dense_id_matrix_slots_equal_tf_safe_lookup(tmp_path, seed):
    """id_widths: safe slots over a padded dense id matrix (whole, a column range, the columns from c
    on; rank 3 flattened into rows) against tf.nn.safe_embedding_lookup_sparse over the same entries."""
    rng = np.random.default_rng(seed)
    tables = {"a.tiemb": rng.standard_normal((30, 6)).astype(np.float32),
              "b.tiemb": rng.standard_normal((9, 3)).astype(np.float32)}
    store = str(tmp_path / "store")
    tf_ops.write_store(store, tables, max_batch_size=16, slot_num=4, max_nnz=6)
    ids = rng.integers(0, 9, (16, 6))
    ids[rng.random((16, 6)) < 0.4] = -1
    ids[::4] = -1
    cube = ids.reshape(4, 4, 6)

    def safe(name, x, combiner):
        x = x.reshape(-1, x.shape[-1])
        idx = np.argwhere(np.ones(x.shape, bool)).astype(np.int64)
        sp = tf.SparseTensor(idx, x.reshape(-1).astype(np.int64), x.shape)
        return tf.nn.safe_embedding_lookup_sparse(tf.constant(tables[name]), sp, None, combiner=combiner).numpy()

    no_seg = tf.zeros([0], tf.int64)
    for dtype in (np.int32, np.int64):
        outs = tf_ops.lookup(store, [tf.constant(ids.astype(dtype))] * 3 + [tf.constant(cube.astype(dtype))],
                             [no_seg] * 4, tables=["a.tiemb", "b.tiemb", "b.tiemb", "b.tiemb"], dims=[6, 3, 3, 3],
                             combiners=["mean", "sum", "sqrtn", "mean"], modes=["safe"] * 4,
                             id_columns=[-1, 1, 4, -1], id_widths=[0, 3, 0, 0])
        wants = [safe("a.tiemb", ids, "mean"), safe("b.tiemb", ids[:, 1:4], "sum"),
                 safe("b.tiemb", ids[:, 4:], "sqrtn"), safe("b.tiemb", cube, "mean")]
        for s, (got, want) in enumerate(zip(outs, wants)):
            assert got.shape == want.shape, (s, got.shape)
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6, err_msg=f"slot {s}")

    @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.int64)])
    def graph(x):
        return tf_ops.lookup(store, [x], [no_seg], tables=["a.tiemb"], dims=[6], combiners=["sum"], modes=["safe"],
                             id_widths=[2], id_columns=[3])

    assert graph.get_concrete_function().outputs[0].shape.as_list() == [None, 6]
    bad = ids.copy()
    bad[2, 5] = 30
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: ids\[2, 5\] = 30 is out of range \[0, 30\)"):
        tf_ops.lookup(store, [tf.constant(bad)], [no_seg], tables=["a.tiemb"], dims=[6], combiners=["sum"],
                      modes=["safe"], id_widths=[0])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: ids must be a \[rows, k\] matrix with k >= 8"):
        tf_ops.lookup(store, [tf.constant(ids)], [no_seg], tables=["a.tiemb"], dims=[6], combiners=["sum"],
                      modes=["safe"], id_widths=[4], id_columns=[4])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: ids_per_row = 7 exceeds max_nnz = 6"):
        tf_ops.lookup(store, [tf.constant(np.zeros((2, 8), np.int64))], [no_seg], tables=["a.tiemb"], dims=[6],
                      combiners=["sum"], modes=["safe"], id_widths=[7], id_columns=[1])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: id_widths\[0\] = 0 .* needs mode safe"):
        tf_ops.lookup(store, [tf.constant(ids)], [no_seg], tables=["a.tiemb"], dims=[6], combiners=["sum"],
                      modes=["plain"], id_widths=[0])


def _fused_kw(cases, groups):
    """slot_outputs / slot_offsets putting the slots of each group (lists of
    slot indices, in column order) side by side in one output."""
    outputs, offsets = [0] * len(cases), [0] * len(cases)
    for o, group in enumerate(groups):
        col = 0
        for s in group:
            outputs[s], offsets[s] = o, col
            col += cases[s].table.shape[1]
    return dict(slot_outputs=outputs, slot_offsets=offsets)


@pytest.mark.parametrize("table_dtype", [np.float32, np.float16], ids=["f32", "f16"])
def test_fused_outputs_equal_the_concatenation(table_dtype, tmp_path, seed):
    """Slots writing their columns of one output (out_row_stride) give exactly
    the concatenation of their separate outputs, in any column order and with
    slots left alone; in eager mode and in a graph."""
    rng = np.random.default_rng(seed)
    modes = ["safe", "plain", "safe", "safe", "safe", "plain"]
    cases = [random_slot(rng, dim=int(rng.choice([1, 3, 8, 16])), table_dtype=table_dtype, id_dtype=np.int64,
                         combiner=str(rng.choice(["sum", "mean", "sqrtn"])), mode=m, weighted=bool(rng.random() < .5),
                         max_batch=MAX_BATCH, max_nnz=MAX_NNZ) for m in modes]
    for c in cases:   # one batch size: concatenable
        c.num_rows = MAX_BATCH
    store = make_store(tmp_path, cases)
    safe = [s for s, m in enumerate(modes) if m == "safe"]
    groups = [[safe[2], safe[0], safe[3]], [1], [safe[1]], [5]]
    kw = dict(tables=[f"t{i}.tiemb" for i in range(len(cases))], dims=[c.table.shape[1] for c in cases],
              combiners=[c.combiner for c in cases], modes=modes, default_ids=[-1] * len(cases))
    out_t = tf.float16 if table_dtype == np.float16 else tf.float32
    args = ([tf.constant(c.ids) for c in cases], [tf.constant(c.segment_ids) for c in cases])
    extra = dict(weights=[None if c.weights is None else tf.constant(c.weights) for c in cases],
                 num_rows=[tf.constant(c.num_rows, tf.int64) for c in cases])
    separate = [t.numpy() for t in tf_ops.lookup(store, *args, out_types=[out_t] * len(cases), **kw, **extra)]
    fused_kw = dict(kw, **_fused_kw(cases, groups), out_types=[out_t] * len(groups))
    eager = [t.numpy() for t in tf_ops.lookup(store, *args, **fused_kw, **extra)]
    graph = [t.numpy() for t in tf.function(lambda i, s: tf_ops.lookup(store, i, s, **fused_kw, **extra))(*args)]
    for fused in (eager, graph):
        assert len(fused) == len(groups)
        for o, group in enumerate(groups):
            want = np.concatenate([separate[s] for s in group], axis=1)
            assert fused[o].dtype == want.dtype and fused[o].shape == want.shape, (o, fused[o].shape, want.shape)
            np.testing.assert_array_equal(fused[o], want)


def test_fused_outputs_check_rows_and_columns(tmp_path, seed):
    """Slots of one output with different row counts fail like the concat
    they replace; overlapping or missing columns are refused by name."""
    rng = np.random.default_rng(seed)
    cases = [random_slot(rng, dim=4, table_dtype=np.float32, id_dtype=np.int64, combiner="sum", mode="safe",
                         weighted=False, max_batch=MAX_BATCH - 1) for _ in range(2)]
    cases[0].num_rows, cases[1].num_rows = MAX_BATCH - 1, MAX_BATCH
    store = make_store(tmp_path, cases)
    kw = dict(tables=["t0.tiemb", "t1.tiemb"], dims=[4, 4], combiners=["sum"] * 2, modes=["safe"] * 2,
              num_rows=[tf.constant(c.num_rows, tf.int64) for c in cases])
    args = ([tf.constant(c.ids) for c in cases], [tf.constant(c.segment_ids) for c in cases])
    with pytest.raises(tf.errors.InvalidArgumentError, match="slots 0 and 1 share output 0.*63 and 64 rows"):
        tf_ops.lookup(store, *args, slot_outputs=[0, 0], slot_offsets=[0, 4], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match="slot 1: slot_offsets says column 2"):
        tf_ops.lookup(store, *args, slot_outputs=[0, 0], slot_offsets=[0, 2], **kw)
    with pytest.raises(tf.errors.InvalidArgumentError, match="no slot writes output 1"):
        tf_ops.lookup(store, *args, slot_outputs=[0, 2], slot_offsets=[0, 0], **kw)
