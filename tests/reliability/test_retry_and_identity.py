"""A serving process survives retried failures and never mixes two models
(issue 11, defects 1 and 2)."""

import os
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from rel_models import feeds, lookup_model  # noqa: E402
from tiemb import tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

_RETRY = r"""
import sys, numpy as np, tensorflow as tf, tiemb
from tiemb import tf_ops
d = sys.argv[1]
case = sys.argv[2]
if case == "slots":        # the store's slot_num (1) is below the op's slot count (2)
    tf_ops.write_store(d, {"a.tiemb": np.ones((10, 4), np.float32)}, max_batch_size=8, slot_num=1, max_nnz=4)
    kw = dict(tables=["a.tiemb"] * 2, dims=[4, 4], combiners=["sum"] * 2, modes=["plain"] * 2)
    ids = [tf.constant([1], tf.int64)] * 2
    segs = [tf.constant([0], tf.int64)] * 2
else:                      # default id 100 on a 10-row table
    tf_ops.write_store(d, {"a.tiemb": np.ones((10, 4), np.float32)}, max_batch_size=8, slot_num=1, max_nnz=4)
    kw = dict(tables=["a.tiemb"], dims=[4], combiners=["sum"], modes=["safe"], default_ids=[100],
              num_rows=[tf.constant(1, tf.int64)])
    ids = [tf.constant([1], tf.int64)]
    segs = [tf.constant([0], tf.int64)]

@tf.function
def graph_call():
    return tf_ops.lookup(d, ids, segs, **kw)

for call in (lambda: tf_ops.lookup(d, ids, segs, **kw), graph_call):
    for attempt in range(3):   # a server retrying the failed request
        try:
            call()
        except tf.errors.InvalidArgumentError as e:
            print("refused:", " ".join(str(e).split()))
        else:
            raise SystemExit("the bad lookup was served")
print("alive")
"""


@pytest.mark.parametrize("case", ["slots", "default_id"])
def test_failed_group_build_then_retry_does_not_crash(tmp_path, case):
    proc = subprocess.run([sys.executable, "-c", _RETRY, str(tmp_path / "store"), case], capture_output=True, cwd="/",
                          text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    lines = proc.stdout.splitlines()
    assert lines[-1] == "alive" and sum(line.startswith("refused:") for line in lines) == 6, proc.stdout
    want = "slot_num" if case == "slots" else "default"
    assert all(want in line for line in lines if line.startswith("refused:")), proc.stdout


def _optimize(src, dst, overwrite=False):
    batches = [feeds(seed=0, batch=16, vocab=50)]
    tiemb.optimize(src, 0, 1, ["16*4"], test_data=batches, save_path=dst, overwrite=overwrite, runs=2)
    return batches


def _serve(model, feeds):
    fn = model.signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()}


@pytest.mark.parametrize("how", ["copy", "overwrite"])
def test_replaced_store_directory_is_a_new_model(tmp_path, how):
    """Load A from P, replace P with B, load P again while A is loaded: each
    serves its own tables."""
    a_src, b_src = lookup_model(str(tmp_path / "a"), 1), lookup_model(str(tmp_path / "b"), 2)
    p = str(tmp_path / "p")
    feeds = _optimize(a_src, p)[0]
    want_a = _serve(tf.saved_model.load(a_src), feeds)
    want_b = _serve(tf.saved_model.load(b_src), feeds)
    assert not np.allclose(next(iter(want_a.values())), next(iter(want_b.values())))
    model_a = tf.saved_model.load(p)
    got_a = _serve(model_a, feeds)              # A's engine is built and cached now
    if how == "copy":
        _optimize(b_src, str(tmp_path / "b_opt"))
        shutil.rmtree(p)
        shutil.copytree(str(tmp_path / "b_opt"), p)
        model_b = tf.saved_model.load(p)
    else:
        model_b, report = tiemb.optimize(b_src, 0, 1, ["16*4"], test_data=[feeds], save_path=p, overwrite=True,
                                         runs=2)
        assert report.accuracy["max_rel_diff"] < 1e-6
    for k in want_a:
        np.testing.assert_allclose(got_a[k], want_a[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_serve(model_b, feeds)[k], want_b[k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_serve(model_a, feeds)[k], want_a[k], rtol=1e-5, atol=1e-6)


def test_eight_threads_with_retried_failures(tmp_path):
    """8 threads share one store: good calls equal TF's, bad ones are refused
    every time, and the process stays up."""
    rng = np.random.default_rng(5)
    table = rng.standard_normal((40, 6)).astype(np.float32)
    store = str(tmp_path / "s")
    tf_ops.write_store(store, {"t.tiemb": table}, max_batch_size=64, slot_num=1, max_nnz=20)  # up to 19 ids a sample
    kw = dict(tables=["t.tiemb"], dims=[6], combiners=["sum"], modes=["plain"])
    errors, wrong = [], []

    def worker(k):
        r = np.random.default_rng(k)
        for i in range(30):
            n = int(r.integers(1, 20))
            ids = r.integers(0, 40, n).astype(np.int64)
            segs = np.sort(r.integers(0, 5, n)).astype(np.int64)
            bad = i % 3 == 0
            if bad:
                ids[0] = 40 + k   # out of range
            try:
                got = tf_ops.lookup(store, [tf.constant(ids)], [tf.constant(segs)], **kw)[0].numpy()
            except tf.errors.InvalidArgumentError as e:
                if not bad or "out of range" not in str(e):
                    errors.append(str(e))
                continue
            if bad:
                wrong.append("a bad id was served")
                continue
            want = tf.math.segment_sum(tf.gather(table, ids), segs).numpy()
            if not np.array_equal(got, want):
                wrong.append(f"thread {k} call {i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not wrong, (errors[:3], wrong[:3])
