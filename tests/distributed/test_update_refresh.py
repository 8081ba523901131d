"""Online updates: a new version layered over the current one, served after
refresh() at once and within refresh_seconds (+ one refresh) without it."""

import threading
import time

import numpy as np
import pytest

import tiemb
import tiemb._C as C
from tiemb import distributed as dist
from test_cpu_serving import remote_engine, settings

pytestmark = pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")


def test_update_then_refresh_serves_new_rows(redis_cluster, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((300, 8)).astype(np.float32)
    model = f"upd{seed}"
    eng, d = remote_engine(redis_cluster, {"emb": table}, model=model, host_share=0.5)
    g = eng.group([tiemb.Slot(d.table_ids["emb"], "sum", "gather")])
    all_ids = np.arange(300, dtype=np.int64)[:64]
    # Updated ids on the host tier (0..149 by the default order) and in the cluster only.
    ids = np.array([3, 40, 200, 299], dtype=np.int64)
    rows = rng.standard_normal((4, 8)).astype(np.float32)
    client = dist.connect(settings(redis_cluster))
    r = dist.update_table(client, "t", model, "emb", ids, rows)
    assert r["changed_blocks"] == 4 and r["base"] == d.versions()["emb"]
    # Before refresh: the old version, exactly (no half-applied update).
    assert np.array_equal(g.lookup([ids])[0], table[ids])
    assert d.refresh() == {"emb": r["version"]}
    want = table.copy()
    want[ids] = rows
    assert np.array_equal(g.lookup([ids])[0], rows)
    assert np.array_equal(g.lookup([all_ids])[0], want[all_ids])
    assert np.array_equal(g.lookup([np.arange(236, 300, dtype=np.int64)])[0], want[236:300])
    # A second update layers on the first; a fresh reader sees both.
    dist.update_table(client, "t", model, "emb", np.array([3], np.int64), np.full((1, 8), 7, np.float32))
    want[3] = 7
    e3 = tiemb.EmbeddingEngine(64, 1, 1)
    d3 = dist.DistributedTables(e3, settings(redis_cluster, namespace="t"), model, ["emb"], {"emb": np.arange(10)})
    g3 = e3.group([tiemb.Slot(d3.table_ids["emb"], "sum", "gather")])
    for lo in range(0, 300, 64):
        q = np.arange(lo, min(300, lo + 64), dtype=np.int64)
        assert np.array_equal(g3.lookup([q])[0], want[q])
    d.close()


def test_republishing_keeps_later_updates(redis_cluster, seed):
    """Publishing the same table again (tiemb publish STORE after an update)
    leaves ``current`` at the update; publishing other content switches."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((40, 4)).astype(np.float32)
    model = f"repub{seed}"
    client = dist.connect(settings(redis_cluster))
    first = dist.publish_table(client, "t", model, "emb", table)
    assert first["current"] == first["version"]
    upd = dist.update_table(client, "t", model, "emb", np.array([5]), np.ones((1, 4), np.float32))
    again = dist.publish_table(client, "t", model, "emb", table)
    assert again["written_values"] == 0 and again["current"] == upd["version"]
    assert dist.current_version(client, "t", model, "emb") == upd["version"]
    other = dist.publish_table(client, "t", model, "emb", table + 1)
    assert other["current"] == other["version"] != upd["version"]
    assert dist.current_version(client, "t", model, "emb") == other["version"]


def test_bad_updates_are_refused(redis_cluster, seed):
    model = f"badupd{seed}"
    client = dist.connect(settings(redis_cluster))
    dist.publish_table(client, "t", model, "emb", np.zeros((10, 2), np.float32))
    with pytest.raises(dist.DistributedError, match=r"id 10 is out of range \[0, 10\)"):
        dist.update_table(client, "t", model, "emb", np.array([10]), np.zeros((1, 2), np.float32))
    with pytest.raises(dist.DistributedError, match=r"rows must be \(1, 2\)"):
        dist.update_table(client, "t", model, "emb", np.array([1]), np.zeros((1, 3), np.float32))
    with pytest.raises(dist.DistributedError, match=r"'other': not published"):
        dist.update_table(client, "t", model, "other", np.array([1]), np.zeros((1, 2), np.float32))


def test_refresh_seconds_bound(redis_cluster, seed):
    """An update is served within refresh_seconds + one refresh, while 4 threads keep serving."""
    period = 0.5
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((500, 4)).astype(np.float32)
    model = f"bound{seed}"
    eng, d = remote_engine(redis_cluster, {"emb": table}, model=model, host_share=0.3, refresh_seconds=period)
    groups = [eng.group([tiemb.Slot(d.table_ids["emb"], "sum", "gather")]) for _ in range(4)]
    stop = threading.Event()
    wrong = []
    client = dist.connect(settings(redis_cluster))
    new = np.full((1, 4), 42.0, np.float32)

    def serve(g):
        q = np.arange(0, 64, dtype=np.int64)
        while not stop.is_set():
            out = g.lookup([q])[0]
            # Every answer is one whole version or the other.
            if not (np.array_equal(out[1:], table[q][1:]) and
                    (np.array_equal(out[0], table[0]) or np.array_equal(out[0], new[0]))):
                wrong.append(out)

    threads = [threading.Thread(target=serve, args=(g,)) for g in groups[1:]]
    for t in threads:
        t.start()
    dist.update_table(client, "t", model, "emb", np.array([0]), new)
    t0 = time.monotonic()
    while not np.array_equal(groups[0].lookup([np.array([0], np.int64)])[0], new):
        assert time.monotonic() - t0 < period + 2.0, "update not served within refresh_seconds + 2 s"
        time.sleep(0.01)
    seen = time.monotonic() - t0
    stop.set()
    for t in threads:
        t.join()
    assert not wrong
    assert seen <= period + 1.0, f"served after {seen:.2f} s, bound {period} s + one refresh"
    assert d.stats()["tables"]["emb"]["refreshes"] == 1
    d.close()
