"""`tiemb tasks` end to end, each command its own process, as a person runs it."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from taskhelp import LONG_RUNS, TENSOR_INFO, alive

def test_bad_input_is_refused_and_queues_nothing(tasks, serving_model, tmp_path):
    def refused(*args, match):
        p = tasks("submit", "--runs", "3", *args, check=False)
        assert p.returncode == 1, p.stdout + p.stderr
        assert match in p.stderr, p.stderr
        assert tasks.list() == []

    out = str(tmp_path / "out")
    ok = ["--tensor-info", TENSOR_INFO]
    refused("--name", "a", "--model", str(tmp_path / "missing"), *ok, "--save-root", out,
            match=f"{tmp_path / 'missing'} does not exist")
    # One good model and one missing: still nothing queued.
    refused("--name", "a", "--model", serving_model, "--model", serving_model + "@7", *ok, "--save-root", out,
            match="has no version '7' (it has 1, 2)")
    refused("--name", "a", "--model", serving_model, *ok, "--save-root", os.path.join(serving_model, "1", "opt"),
            match="is inside the directory of model 'wd'")
    refused("--name", "a", "--model", serving_model, *ok, "--save-root", os.path.dirname(serving_model),
            match="contains the directory of model 'wd'")
    refused("--name", "a", "--model", serving_model, "--save-root", out,
            "--tensor-info", "dense:float(1*13,32*13)\ncat:int64(1*26,32*2x6)",
            match="line 2 'cat:int64(1*26,32*2x6)': bad dimension '2x6' at position")
    info = tmp_path / "info.txt"
    info.write_text("dense:float(1*13)\ncat int64(1*26)\n")
    refused("--name", "a", "--model", serving_model, "--save-root", out, "--tensor-info", str(info),
            match=f"--tensor-info file {info}: line 2 'cat int64(1*26)': expected 'element:dtype(shape)', no ':'")
    refused("--name", "a", "--model", serving_model, *ok, "--save-root", out, "--level", "1", "--config",
            str(info), match=f"--config {info}")

    # A duplicate name: the second submission queues nothing, the first stays alone.
    assert tasks.submit("dup", serving_model + "@1") == [1]
    p = tasks("submit", "--name", "dup", "--model", serving_model + "@2", *ok, "--save-root", out, check=False)
    assert p.returncode == 1 and "a task named 'dup' exists already" in p.stderr
    assert [t["name"] for t in tasks.list()] == ["dup"]


def test_naming_follows_seed_001(tasks, serving_model):
    ids = tasks.submit("nightly", serving_model, extra=["--tag", "team=ads"])
    assert [t["name"] for t in tasks.list()] == ["nightly-wd-1#1", "nightly-wd-2#2"]
    assert tasks.submit("one", serving_model + "@2") == [ids[-1] + 1]
    t = tasks.get(ids[-1] + 1)
    assert (t["name"], t["model"], t["version"], t["state"]) == ("one", "wd", "2", "queued")
    assert t["model_path"] == os.path.join(serving_model, "2")
    # An explicit version folder counts as that version of its model.
    tasks.submit("explicit", os.path.join(serving_model, "1"))
    assert tasks.list()[-1]["version"] == "1" and tasks.list()[-1]["model"] == "wd"


def _outputs(path, batch):
    import tensorflow as tf

    from tiemb import tf_ops

    tf_ops.load()  # TiembLookup, which the optimized model calls

    fn = tf.saved_model.load(path).signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in batch.items()}).items()}


def test_two_versions_stop_retry_tag_save_delete(tasks, serving_model, tmp_path):
    long_id, other_id = tasks.submit("long", serving_model, runs=LONG_RUNS)
    ids = tasks.submit("wd", serving_model, extra=["--tag", "team=ads"])
    worker = tasks.start_worker(jobs=2)

    # Two long tasks run side by side; stopping one kills its process alone.
    pid, other_pid = (tasks.wait(i, "accelerating", with_pid=True)["pid"] for i in (long_id, other_id))
    assert [tasks.get(i)["state"] for i in ids] == ["queued", "queued"]   # both jobs are busy
    assert tasks("stop", str(long_id)).stdout.split() == [str(long_id), "stopped"]
    end = time.monotonic() + 15
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.1)
    assert not alive(pid), "the stopped task's process still runs"
    assert alive(other_pid) and tasks.get(other_id)["state"] == "accelerating"
    assert worker.poll() is None, "the worker died with its task"
    t = tasks.get(long_id)
    assert t["state"] == "stopped" and t["reason"] == "stopped while accelerating"
    p = tasks("stop", str(long_id), check=False)
    assert p.returncode == 1 and "is stopped already" in p.stderr
    tasks("stop", str(other_id))

    # Then the two versions go queued -> starting -> accelerating -> done.
    seen = {i: ["queued"] for i in ids}
    end = time.monotonic() + 120
    while not all(s[-1:] == ["done"] for s in seen.values()):
        assert time.monotonic() < end, f"not done after 120 s: {seen}"
        for t in tasks.list():
            if t["id"] in seen and seen[t["id"]][-1:] != [t["state"]]:
                seen[t["id"]].append(t["state"])
            assert t["state"] != "failed", t
        time.sleep(0.1)
    for i in ids:
        assert seen[i][-1] == "done"
        assert set(seen[i]) <= {"queued", "starting", "accelerating", "done"}
        assert "starting" in seen[i] or "accelerating" in seen[i], seen[i]
    for i in ids:
        t = tasks.get(i)
        assert t["progress"] == 100 and t["speedup"] > 0
        assert t["report"]["timing"]["speedup"] == t["speedup"] and t["report"]["accuracy"]["max_rel_diff"] <= 1e-6
        assert os.path.isfile(os.path.join(t["output_path"], "saved_model.pb"))
        assert "done" in t["log_tail"]

    # Retry with edited settings: few timing runs this time.
    p = tasks("retry", str(ids[0]), check=False)
    assert p.returncode == 1 and "only failed or stopped tasks are retried" in p.stderr
    tasks("retry", str(long_id), "--runs", "3", "--level", "1")
    t = tasks.wait(long_id, "done")
    assert (t["runs"], t["level"], t["attempts"]) == (3, 1, 2) and t["speedup"] > 0

    # Tags, and the list filtered by them.
    assert tasks("tag", str(long_id), "team=search", "stage=canary").stdout.strip() == \
        f"{long_id}\tstage=canary,team=search"
    tasks("tag", str(ids[1]), "--remove", "team")
    assert [t["id"] for t in tasks.list("--tag", "team=ads")] == [ids[0]]
    assert [t["id"] for t in tasks.list("--tag", "team=search", "--state", "done")] == [long_id]
    table = tasks("list").stdout
    assert "wd-wd-2#2" in table and "SPEEDUP" in table and "stage=canary,team=search" in table

    # Save into a repository in the TF Serving layout; the copy serves what the original does.
    repo = tmp_path / "repo"
    saved = tasks("save", str(ids[1]), "--repository", str(repo)).stdout.strip()
    assert saved == str(repo / "wd" / "2")
    p = tasks("save", str(ids[1]), "--repository", str(repo), check=False)
    assert p.returncode == 1 and "exists already; it is not overwritten" in p.stderr
    rng = np.random.default_rng(0)
    batch = {"dense": rng.random((8, 13), dtype=np.float32),
             "cat": rng.integers(0, 50, (8, 26)).astype(np.int64)}
    want, got = _outputs(os.path.join(serving_model, "2"), batch), _outputs(saved, batch)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)

    # Delete: the task, its optimized model and its log go; the saved copy stays.
    t = tasks.get(ids[0])
    tasks("delete", str(ids[0]))
    assert not os.path.exists(t["output_path"]) and not os.path.exists(t["log_path"])
    assert ids[0] not in [x["id"] for x in tasks.list()]
    assert os.path.isfile(os.path.join(saved, "saved_model.pb"))
    p = tasks("show", str(ids[0]), check=False)
    assert p.returncode == 1 and f"no task with id {ids[0]}" in p.stderr


def test_ui_without_flask_says_how_to_install(tasks):
    p = subprocess.run([sys.executable, "-c", "import sys; sys.modules['flask'] = None; from tiemb.cli import main; "
                        f"sys.exit(main(['ui', '--db', {tasks.db!r}]))"],
                       capture_output=True, text=True, env=tasks.env, timeout=60, cwd=tasks.cwd)
    assert p.returncode == 1 and "pip install 'tiemb[ui]'" in p.stderr, p.stderr


def test_delete_refused_while_running_and_retry_right_after_stop(tasks, serving_model):
    tid, = tasks.submit("long", serving_model + "@1", runs=LONG_RUNS)
    tasks.start_worker()
    pid = tasks.wait(tid, "accelerating", with_pid=True)["pid"]
    p = tasks("delete", str(tid), check=False)
    assert p.returncode == 1 and "stop it before deleting it" in p.stderr
    # Stopped and retried at once, before the worker has reaped the old
    # process: the old one is killed and never writes into the new attempt.
    tasks("stop", str(tid))
    tasks("retry", str(tid))
    end = time.monotonic() + 60
    while (tasks.get(tid)["attempts"] < 2 or alive(pid)) and time.monotonic() < end:
        time.sleep(0.1)
    t = tasks.wait(tid, "accelerating", with_pid=True)
    assert t["attempts"] == 2 and t["pid"] != pid and not alive(pid)
    tasks("stop", str(tid))
    tasks.wait(tid, "stopped")
    tasks("delete", str(tid))
    assert tasks.list() == []


def test_concurrent_submitters(tasks, serving_model, tmp_path):
    """Eight processes submit at once (two of them the same name): every task
    gets its own id, the name is taken once, nothing is half-written."""
    names = [f"job{k}" for k in range(7)] + ["job0"]
    procs = [subprocess.Popen([sys.executable, "-m", "tiemb", "tasks", "submit", "--db", tasks.db, "--name", n,
                               "--model", serving_model, "--tensor-info", TENSOR_INFO,
                               "--save-root", str(tmp_path / "out")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=tasks.env, cwd=tasks.cwd)
             for n in names]
    results = [(p.wait(60), p.stdout.read(), p.stderr.read()) for p in procs]
    failed = [r for r in results if r[0] != 0]
    assert len(failed) == 1 and "a task named 'job0-wd-1#1' exists already" in failed[0][2], results
    listed = tasks.list()
    assert len(listed) == 14 and len({t["id"] for t in listed}) == 14
    assert sorted(t["name"] for t in listed) == sorted(f"job{k}-wd-{v}#{v}" for k in range(7) for v in (1, 2))
    # Each submission's two tasks are next to each other: one transaction each.
    for k in range(7):
        a, b = [t["id"] for t in listed if t["name"].startswith(f"job{k}-")]
        assert b == a + 1
    assert len({t["output_path"] for t in listed}) == 14


def test_killed_worker_leaves_nothing_stuck(tasks, serving_model):
    tid, = tasks.submit("long", serving_model + "@1", runs=LONG_RUNS)
    queued, = tasks.submit("next", serving_model + "@2")
    worker = tasks.start_worker()
    t = tasks.wait(tid, "accelerating", with_pid=True)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    # The task's process notices its worker is gone and ends by itself.
    end = time.monotonic() + 10
    while alive(t["pid"]) and time.monotonic() < end:
        time.sleep(0.1)
    assert not alive(t["pid"]), "the task outlived its killed worker"
    assert tasks.get(tid)["state"] == "accelerating"   # nobody has looked yet
    # The next worker marks it failed "worker stopped" and goes on with the queue.
    p = tasks("worker", "--exit-when-idle", timeout=120)
    assert "1 task(s) of a stopped worker marked failed" in p.stdout, p.stdout
    t = tasks.get(tid)
    assert (t["state"], t["reason"]) == ("failed", "worker stopped")
    assert tasks.get(queued)["state"] == "done"
    # A retry with malformed settings changes nothing; good ones queue it again.
    p = tasks("retry", str(tid), "--tensor-info", "dense:float(1*13)", "cat:int64(1*26", check=False)
    assert p.returncode == 1 and "line 1 'cat:int64(1*26': expected '(shape)'" in p.stderr, p.stderr
    assert tasks.get(tid)["state"] == "failed"
    tasks("retry", str(tid), "--runs", "2", "--tensor-info", "dense:float(4*13)", "cat:int64(4*26)")
    t = tasks.get(tid)
    assert (t["state"], t["runs"], t["tensor_info"]) == ("queued", 2, "dense:float(4*13)\ncat:int64(4*26)")


def test_worker_stopped_with_sigterm_fails_its_tasks(tasks, serving_model):
    tid, = tasks.submit("long", serving_model + "@1", runs=LONG_RUNS)
    worker = tasks.start_worker()
    pid = tasks.wait(tid, ("starting", "accelerating"), with_pid=True)["pid"]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert not alive(pid)
    t = tasks.get(tid)
    assert (t["state"], t["reason"]) == ("failed", "worker stopped")


def test_frozen_graph_task(tasks, tmp_path):
    """A frozen graph .pb is version 1 of a model named after the file; its
    optimized .pb, table store and report are saved together."""
    tf = pytest.importorskip("tensorflow", reason="a frozen graph is written with TensorFlow (absent on the GPU machine)")
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    table = tf.Variable(np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64, name="ids")])
    def f(ids):
        return tf.reduce_sum(tf.gather(table, ids), 1, name="out")

    src = tmp_path / "graphs" / "ctr.pb"
    src.parent.mkdir()
    src.write_bytes(convert_variables_to_constants_v2(f.get_concrete_function()).graph.as_graph_def()
                    .SerializeToString())
    p = tasks("submit", "--name", "pb", "--model", str(src), "--tensor-info", "ids:int64(1*3,16*3)", "--runs", "3",
              "--save-root", str(tmp_path / "graphs" / "out"), check=False)
    assert p.returncode == 1 and "is inside the directory of model 'ctr'" in p.stderr
    tid, = tasks.submit("pb", str(src), info="ids:int64(1*3,16*3)")
    tasks("worker", "--exit-when-idle", timeout=120)
    t = tasks.get(tid)
    assert (t["state"], t["model"], t["version"]) == ("done", "ctr", "1"), t["log_tail"]
    assert t["report"]["rewrite"]["replaced"] == 1 and t["speedup"] > 0
    saved = tasks("save", str(tid), "--repository", str(tmp_path / "repo")).stdout.strip()
    assert sorted(os.listdir(saved)) == ["ctr.pb", "ctr.pb.report.json", "ctr.pb.store"]
