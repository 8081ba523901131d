"""The CPU op's parallel loop on TensorFlow's worker pool (issue 13): helpers
that wake late must never run a task of a later call, and calls that overlap
must each get TensorFlow's result."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from serving import run_in_threads  # noqa: E402
from tiemb import tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

DIMS = [16] * 12 + [1] * 12  # W&D's shape in small: wide and deep slots, one fused output each


def _store(tmp_path, rng):
    tables = [rng.standard_normal((5000, d)).astype(np.float32) for d in DIMS]
    store = str(tmp_path / "store")
    tf_ops.write_store(store, {f"t{i}.tiemb": t for i, t in enumerate(tables)}, max_batch_size=2048,
                       slot_num=len(DIMS), max_nnz=1)
    return store, tables


def _graph(store, tables):
    """(graph, ids placeholder, the op's two outputs, TensorFlow's gathers
    concatenated the same way): the oracle inside the same session."""
    n = len(DIMS)
    deep, wide = list(range(12)), list(range(12, 24))
    offsets = [16 * i for i in range(12)] + list(range(12))
    graph = tf.Graph()
    with graph.as_default():
        ids = tf.compat.v1.placeholder(tf.int64, [None, 12])
        cols = [s % 12 for s in range(n)]
        ours = tf_ops.lookup(store, [ids] * n, [tf.zeros([0], tf.int64)] * n,
                             tables=[f"t{i}.tiemb" for i in range(n)], dims=DIMS, combiners=["sum"] * n,
                             modes=["gather"] * n, id_columns=cols, slot_outputs=[0] * 12 + [1] * 12,
                             slot_offsets=offsets)
        theirs = [tf.concat([tf.gather(tf.constant(tables[s]), ids[:, cols[s]]) for s in part], axis=1)
                  for part in (deep, wide)]
    return graph, ids, ours, theirs


@pytest.mark.parametrize("intra", [1, 2, 4])
def test_overlapping_calls_on_the_worker_pool_match_tf(intra, tmp_path, seed):
    """6 threads run a 24-slot op (work far above the parallel threshold) in
    one session whose intra-op pool has `intra` threads, batches of different
    sizes interleaved, and compare every output with TensorFlow's gathers."""
    rng = np.random.default_rng(seed)
    store, tables = _store(tmp_path, rng)
    graph, ids, ours, theirs = _graph(store, tables)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=intra, inter_op_parallelism_threads=4)
    session = tf.compat.v1.Session(graph=graph, config=config)
    batches = [rng.integers(0, 5000, (n, 12)) for n in (2048, 1, 700, 2048)]

    def body(k):
        for r in range(12):
            x = batches[(k + r) % len(batches)]
            got, want = session.run([ours, theirs], {ids: x})
            for g, w in zip(got, want):
                np.testing.assert_array_equal(g, w)
    run_in_threads(body, 6)


def test_bad_ids_after_parallel_calls_name_the_slot(tmp_path, seed):
    """An id out of range in one slot, after calls that ran in parallel, is
    an InvalidArgument naming the slot and the id; the next good call still
    matches TensorFlow."""
    rng = np.random.default_rng(seed)
    store, tables = _store(tmp_path, rng)
    graph, ids, ours, theirs = _graph(store, tables)
    session = tf.compat.v1.Session(graph=graph)
    good = rng.integers(0, 5000, (2048, 12))
    session.run(ours, {ids: good})
    bad = good.copy()
    bad[100, 3] = 5000
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 3: ids\[100\] = 5000 is out of range"):
        session.run(ours, {ids: bad})
    got, want = session.run([ours, theirs], {ids: good})
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
