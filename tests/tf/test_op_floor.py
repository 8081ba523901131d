"""The benchmark-only floor kernels of TiembLookup (labels tiemb_floor_empty
and tiemb_floor_alloc, used by benchmarks/op_overhead.py): the first call is
the real lookup, later calls only TensorFlow's part of the op; an unlabelled
node is never affected."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tiemb import tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


def _session(tmp_path, rng, label):
    tables = [rng.standard_normal((100, d)).astype(np.float32) for d in (4, 1, 8)]
    store = str(tmp_path / f"store_{label}")  # one per session: an opened store is shared process-wide
    tf_ops.write_store(store, {f"t{i}.tiemb": t for i, t in enumerate(tables)}, max_batch_size=64, slot_num=3,
                       max_nnz=1)
    graph = tf.Graph()
    with graph.as_default():
        ids = tf.compat.v1.placeholder(tf.int64, [None, 3])
        with graph._kernel_label_map({"TiembLookup": label} if label else {}):
            out = tf_ops.lookup(store, [ids] * 3, [tf.zeros([0], tf.int64)] * 3,
                                tables=[f"t{i}.tiemb" for i in range(3)], dims=[4, 1, 8], combiners=["sum"] * 3,
                                modes=["gather"] * 3, id_columns=[0, 1, 2], slot_outputs=[0, 0, 0],
                                slot_offsets=[0, 4, 5])[0]
        want = tf.concat([tf.gather(tf.constant(t), ids[:, c]) for c, t in enumerate(tables)], axis=1)
    return tf.compat.v1.Session(graph=graph), ids, out, want


@pytest.mark.parametrize("label", [None, "tiemb_floor_empty", "tiemb_floor_alloc"])
def test_first_call_is_the_lookup(label, tmp_path, seed):
    rng = np.random.default_rng(seed)
    session, ids, out, want = _session(tmp_path, rng, label)
    x = rng.integers(0, 100, (16, 3))
    got, ref = session.run([out, want], {ids: x})
    np.testing.assert_array_equal(got, ref)


def test_floor_kernels_skip_the_lookup_after_the_first_call(tmp_path, seed):
    """Same fetches every run: a session builds new kernels for a new set."""
    rng = np.random.default_rng(seed)
    first, second = rng.integers(0, 100, (16, 3)), rng.integers(0, 100, (16, 3))
    session, ids, out, want = _session(tmp_path, rng, "tiemb_floor_empty")
    got1 = session.run([out, want], {ids: first})[0].copy()
    got2, ref2 = session.run([out, want], {ids: second})
    np.testing.assert_array_equal(got2, got1)          # the first call's outputs, handed back
    assert not np.array_equal(got2, ref2)
    session, ids, out, want = _session(tmp_path, rng, "tiemb_floor_alloc")
    session.run([out, want], {ids: first})
    assert session.run([out, want], {ids: second[:5]})[0].shape == (16, 13)   # the first call's shape
    session, ids, out, want = _session(tmp_path, rng, None)    # unlabelled: every call looks up
    session.run([out, want], {ids: first})
    got, ref = session.run([out, want], {ids: second})
    np.testing.assert_array_equal(got, ref)
