"""The task database under several processes at once, without TensorFlow:
claims never overlap, conditional updates lose races cleanly."""

import multiprocessing as mp
import os

import pytest

from tiemb.tasks import actions
from tiemb.tasks.store import Store, TaskError
from tiemb.tasks.submit import ModelVersion, task_names


def _row(name, root):
    return {"name": name, "model": "m", "version": "1", "model_path": "/nowhere/m/1", "save_root": str(root),
            "level": 0, "device": "cpu", "tensor_info": "x:int64(1*2)", "config": {}, "runs": 1}


def _claim_all(db, worker, out):
    store = Store(db)
    got = []
    while True:
        t = store.claim(worker)
        if t is None:
            break
        got.append(t["id"])
    out.put((worker, got))


def test_workers_never_claim_the_same_task(tmp_path):
    db = str(tmp_path / "t.db")
    ids = Store(db).insert_many([_row(f"t{k}", tmp_path / "out") for k in range(60)])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claim_all, args=(db, f"w{k}", out)) for k in range(4)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    claimed = [i for got in results.values() for i in got]
    assert sorted(claimed) == ids, "a task claimed twice or never"
    store = Store(db)
    for w, got in results.items():
        for i in got:
            t = store.get(i)
            assert (t["state"], t["worker"], t["attempts"]) == ("starting", w, 1)


def test_conditional_updates_lose_races_cleanly(tmp_path):
    store = Store(str(tmp_path / "t.db"))
    tid, = store.insert_many([_row("a", tmp_path / "out")])
    t = store.claim("w1")
    mine = {"worker": "w1", "attempts": t["attempts"]}
    assert actions.stop(store, tid) == "stopped"
    # The task's process finishing just after the stop changes nothing.
    assert not store.update(tid, when=("starting", "accelerating"), match=mine, state="done", speedup=2.0)
    assert store.get(tid)["state"] == "stopped" and store.get(tid)["speedup"] is None
    # Retried and claimed by another worker: the old attempt's writes are ignored.
    actions.retry(store, tid)
    store.claim("w2")
    assert not store.update(tid, when=("starting",), match=mine, progress=50.0)
    assert store.update(tid, when=("starting",), match={"worker": "w2", "attempts": 2}, progress=50.0)
    with pytest.raises(TaskError, match=r"task 1 \(a\) is starting; stop it before deleting it"):
        actions.delete(store, tid)
    with pytest.raises(TaskError, match="only failed or stopped tasks are retried"):
        actions.retry(store, tid)
    with pytest.raises(TaskError, match="no task with id 7"):
        store.get(7)


def test_default_db_follows_xdg(monkeypatch, tmp_path):
    from tiemb.tasks.store import default_db

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db() == os.path.join(str(tmp_path), "tiemb", "tasks.db")
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db() == os.path.join(str(tmp_path), "home", ".local", "share", "tiemb", "tasks.db")


def test_names():
    one = [ModelVersion("wd", "3", "/m/wd/3", "/m/wd")]
    assert task_names("n", one) == ["n"]
    two = one + [ModelVersion("dlrm", "1", "/m/dlrm/1", "/m/dlrm")]
    assert task_names("n", two) == ["n-wd-3#1", "n-dlrm-1#2"]
