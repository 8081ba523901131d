"""optimize() killed at random moments: save_path holds the old model or the
new one, complete, never a partial one; no work directory survives the next
run (issue 11)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from rel_models import feeds, lookup_model, serve  # noqa: E402
from tiemb import _files, tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

_OPTIMIZE = r"""
import sys, numpy as np, tensorflow as tf, tiemb
feed = {"ids": np.random.default_rng(0).integers(0, 50, (16, 4)).astype(np.int64)}
print("ready", flush=True)
tiemb.optimize(sys.argv[1], 0, 1, ["16*4"], test_data=[feed], save_path=sys.argv[2], overwrite=True, runs=20)
print("done", flush=True)
"""


def _leftovers(parent):
    return sorted(n for n in os.listdir(parent) if n.startswith(_files.WORK_PREFIX))


def test_kills_during_optimize_leave_old_or_new(tmp_path, seed):
    rng = np.random.default_rng(seed)
    a_src, b_src = lookup_model(str(tmp_path / "a"), 1), lookup_model(str(tmp_path / "b"), 2)
    out = tmp_path / "out"
    out.mkdir()
    p = str(out / "model")
    feed = feeds()
    want = {name: serve(tf.saved_model.load(src), feed)["out"] for name, src in (("a", a_src), ("b", b_src))}
    tiemb.optimize(a_src, 0, 1, ["16*4"], test_data=[feed], save_path=p, runs=2)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    seen = set()
    for k, sig in enumerate([signal.SIGKILL, signal.SIGTERM] * 3):
        src = b_src if k % 2 == 0 else a_src
        proc = subprocess.Popen([sys.executable, "-c", _OPTIMIZE, src, p], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, env=env, cwd="/")
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.0, 4.0)))
        proc.send_signal(sig)
        proc.wait(timeout=120)
        if sig == signal.SIGTERM:   # cleaned up at once
            assert _leftovers(str(out)) == [], f"SIGTERM left {_leftovers(str(out))}"
        # save_path is complete: a sound store, loadable, serving A's or B's outputs.
        assert os.path.isdir(p), f"kill {k} ({sig.name}) left no model at save_path"
        assert tf_ops.check_store(os.path.join(p, "assets")) == []
        got = serve(tf.saved_model.load(p), feed)["out"]
        match = [n for n, w in want.items() if np.allclose(got, w, rtol=1e-5, atol=1e-5)]
        assert match, f"kill {k} ({sig.name}): the model at save_path is neither A nor B"
        seen.add(match[0])
    # The next run removes what SIGKILL left.
    tiemb.optimize(b_src, 0, 1, ["16*4"], test_data=[feed], save_path=p, overwrite=True, runs=2)
    assert _leftovers(str(out)) == []
    np.testing.assert_allclose(serve(tf.saved_model.load(p), feed)["out"], want["b"], rtol=1e-5, atol=1e-5)


def test_stale_work_dirs_are_removed_but_live_ones_kept(tmp_path):
    parent = str(tmp_path)
    live = _files.new_work_dir(parent)          # this process: alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = os.path.join(parent, ".tiemb-stale")
    os.mkdir(stale)
    with open(os.path.join(stale, "tiemb-owner"), "w") as f:
        f.write(f"{__import__('socket').gethostname()} {int(dead.stdout)}\n")
    orphan = os.path.join(parent, ".tiemb-orphan")   # no owner file, old
    os.mkdir(orphan)
    os.utime(orphan, (time.time() - 7200, time.time() - 7200))
    young = os.path.join(parent, ".tiemb-young")     # no owner file, just made: maybe a run starting
    os.mkdir(young)
    removed = _files.remove_stale_work_dirs(parent)
    assert sorted(removed) == sorted([stale, orphan])
    assert os.path.isdir(live) and os.path.isdir(young)


def test_replace_is_atomic_for_directories(tmp_path):
    old, new = tmp_path / "dst", tmp_path / "new"
    old.mkdir()
    (old / "f").write_text("old")
    new.mkdir()
    (new / "f").write_text("new")
    assert _files.replace(str(new), str(old)) is True
    assert (old / "f").read_text() == "new" and (new / "f").read_text() == "old"


def test_frozen_graph_overwrite_replaces_graph_and_store_together(tmp_path):
    """A .pb and its store beside it: overwrite=True swaps both; the new graph
    serves the new tables, and `tiemb check` finds the store sound."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tiemb.rewrite import load_frozen_graph

    out = str(tmp_path / "opt" / "model.pb")
    ids = np.random.default_rng(0).integers(0, 50, (7, 3))
    for k in range(2):
        table = tf.Variable(np.random.default_rng(k).standard_normal((50, 8)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64, name="ids")])
        def f(x):
            return tf.reduce_sum(tf.gather(table, x), 1, name="out")

        src = str(tmp_path / f"m{k}.pb")
        with open(src, "wb") as fh:
            fh.write(convert_variables_to_constants_v2(f.get_concrete_function()).graph.as_graph_def()
                     .SerializeToString())
        _, report = tiemb.optimize(src, 0, 1, ["16*3"], save_path=out, overwrite=k > 0, runs=2)
        assert report.accuracy["max_rel_diff"] <= 1e-6
        assert tf_ops.check_store(out + ".store") == []
        got = load_frozen_graph(out, ["ids:0"], ["Identity:0"])(tf.constant(ids))[0].numpy()
        np.testing.assert_allclose(got, f(tf.constant(ids)).numpy(), rtol=1e-6)
    assert _leftovers(str(tmp_path / "opt")) == []
