"""The GPU engine follows online updates of Redis Cluster tables: after
refresh() returns (or the store's refresh period passed), every GPU call
serves the updated rows, from a warm GPU cache (its ways of the changed ids
cleared) and from a resident table (its changed rows rewritten). The oracle
is the update itself (the rows written), and the CPU engine over the same
remote tables. Needs a GPU and redis-server."""

import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import tiemb
import tiemb._C as C
from tiemb import distributed as dist
from test_gpu_tier import MAX_BATCH, MAX_NNZ, TIERS, _remote_tables

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")]

ROWS, DIM = 500, 4
NS = "gputier"  # _remote_tables' namespace


def _engines(cluster, table, model, tiers):
    """(CPU group, GPU engine, GPU group, DistributedTables) over one published table "t", gather slots."""
    cpu, d = _remote_tables(cluster, {"t": table}, model, host_share=0.3)
    gpu = tiemb.GpuEmbeddingEngine(MAX_BATCH, 1, MAX_NNZ)
    t = gpu.add_remote_table(d._remote["t"], TIERS[tiers])
    return cpu.group([tiemb.Slot(d.table_ids["t"], mode="gather")]), gpu, gpu.group([tiemb.Slot(t, mode="gather")]), d


def _run_in_threads(bodies, timeout):
    """Runs every body on its own thread; fails on a thread still running
    after `timeout` (a deadlock) or on any exception, naming the thread."""
    errors = []

    def run(k, body):
        try:
            body()
        except Exception as e:  # noqa: BLE001  (reported below, with the thread)
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=run, args=(k, b), daemon=True) for k, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), f"threads still running after {timeout} s"
    assert not errors, errors


def _all_rows(group):
    """Every row of the table through `group`, in calls of 64 ids."""
    return np.concatenate([group.lookup([np.arange(lo, min(ROWS, lo + 64), dtype=np.int64)])[0]
                           for lo in range(0, ROWS, 64)])


@pytest.mark.parametrize("tiers", list(TIERS))
def test_gpu_serves_an_update_after_refresh(redis_cluster, seed, tiers):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    model = f"gpufollow{seed}{tiers}"
    gc, gpu, gg, d = _engines(redis_cluster, table, model, tiers)
    upd = np.array([6, 7, 123, 499], np.int64)  # 6 and 7 share a block of 8
    # 20 ids: at most 20 inserts into any set of 32 ways, so none evicts another.
    warm = np.concatenate([upd, np.arange(200, 216, dtype=np.int64)])
    for _ in range(3):  # a miss inserts the rows (sync below the hit-rate threshold), then they hit
        np.testing.assert_array_equal(gg.lookup([warm])[0], table[warm])
    if tiers != "resident":
        before = gpu.stats(0)["hits"]
        gg.lookup([upd])
        assert gpu.stats(0)["hits"] - before == len(upd), "the ids to update are not in the GPU cache"
    want = table.copy()
    for version in range(2):  # a second update follows the first
        new = rng.standard_normal((len(upd), DIM)).astype(np.float32)
        dist.update_table(d.client, NS, model, "t", upd, new)
        # Not yet refreshed: the served version, whole, from cache and cluster alike.
        np.testing.assert_array_equal(gg.lookup([warm])[0], want[warm])
        d.refresh()
        want[upd] = new
        got = gg.lookup([warm])[0]
        np.testing.assert_array_equal(got[:len(upd)], new, err_msg=f"update {version}: the rows written")
        np.testing.assert_array_equal(got, gc.lookup([warm])[0], err_msg=f"update {version}: the CPU engine")
        np.testing.assert_array_equal(gg.lookup([warm])[0], want[warm])  # now from the cache again
        np.testing.assert_array_equal(_all_rows(gg), want, err_msg=f"update {version}: untouched rows")
    assert d._remote["t"].refreshes == 2
    d.close()


@pytest.mark.parametrize("tiers", ["async", "resident"])
def test_safe_default_row_follows_an_update(redis_cluster, seed, tiers):
    """A safe slot's default row (kept on the device by its group) is
    re-read once its table followed a switch that changed it."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    model = f"gpudefault{seed}{tiers}"
    _, gpu, _, d = _engines(redis_cluster, table, model, tiers)
    g = gpu.group([tiemb.Slot(0, "sum", "safe", default_id=42)])
    ids, seg = np.array([43, 300], np.int64), np.array([0, 2], np.int64)

    def want(t):  # samples 1 and 3 have no id: the default row
        return np.stack([t[43], t[42], t[300], t[42]])

    np.testing.assert_array_equal(g.lookup([ids], segment_ids=[seg], num_rows=[4])[0], want(table))
    new = rng.standard_normal((2, DIM)).astype(np.float32)
    dist.update_table(d.client, NS, model, "t", np.array([42, 43], np.int64), new)
    d.refresh()
    table = table.copy()
    table[[42, 43]] = new
    np.testing.assert_array_equal(g.lookup([ids], segment_ids=[seg], num_rows=[4])[0], want(table))
    d.close()


@pytest.mark.parametrize("tiers", ["async", "resident"])
def test_gpu_follows_past_the_change_log(redis_cluster, seed, tiers):
    """Two refreshes without a GPU call between them, logging more ids than
    the table has rows: the log forgets the first, and the GPU copy is
    rebuilt whole (every way cleared, every resident row re-read)."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    model = f"gpulog{seed}{tiers}"
    gc, gpu, gg, d = _engines(redis_cluster, table, model, tiers)
    _all_rows(gg)
    _all_rows(gg)
    want = table.copy()
    for ids in (np.arange(0, 300, 3, dtype=np.int64), np.arange(200, 500, 3, dtype=np.int64)):
        new = rng.standard_normal((len(ids), DIM)).astype(np.float32)
        dist.update_table(d.client, NS, model, "t", ids, new)
        d.refresh()
        want[ids] = new
    assert d._remote["t"].changed_since(0)[1] is None  # the case under test
    np.testing.assert_array_equal(_all_rows(gg), want)
    np.testing.assert_array_equal(_all_rows(gg), _all_rows(gc))
    d.close()


@pytest.mark.parametrize("tiers", ["async", "sync", "resident"])
def test_threads_see_old_or_new_and_new_after_refresh(redis_cluster, seed, tiers):
    """4 threads look up (each its own group over the shared GPU table) while
    3 updates land: every row is one version of its id, and a call that
    started after refresh() returned never sees an older one."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((ROWS, DIM)).astype(np.float32)
    model = f"gputhreads{seed}{tiers}"
    _, gpu, gg, d = _engines(redis_cluster, table, model, tiers)
    groups = [gpu.group([tiemb.Slot(0, mode="gather")]) for _ in range(4)]
    upd = np.array([3, 4, 250, 251, 498], np.int64)
    # The updated ids, then 59 others (some in the updated blocks: re-read, unchanged).
    q = np.concatenate([upd, rng.choice(np.setdiff1d(np.arange(ROWS), upd), 59).astype(np.int64)])
    versions = [table[upd]] + [rng.standard_normal((len(upd), DIM)).astype(np.float32) for _ in range(3)]
    writer = dist.connect(dist.DistributedSettings(redis_cluster.address, namespace=NS).validate())
    served = [0]  # index of the last version whose refresh() returned
    stop = threading.Event()
    wrong, calls = [], [0] * 4

    def serve(k):
        while not stop.is_set():
            calls[k] += 1
            floor = served[0]
            out = groups[k].lookup([q])[0]
            rows = out[:len(upd)]
            seen = [v for v in range(len(versions)) if np.array_equal(rows, versions[v])]
            # All updated rows of one call come from one version only if the
            # call did not overlap a switch; per row, one of versions >= floor.
            per_row = all(any(np.array_equal(rows[i], versions[v][i]) for v in range(floor, len(versions)))
                          for i in range(len(upd)))
            if not per_row or not np.array_equal(out[len(upd):], table[q[len(upd):]]):
                wrong.append((floor, seen, out))

    def update():
        try:
            for v in range(1, len(versions)):
                time.sleep(0.2)
                dist.update_table(writer, NS, model, "t", upd, versions[v])
                d.refresh()
                served[0] = v
                np.testing.assert_array_equal(gg.lookup([upd])[0], versions[v])
            time.sleep(0.2)
        finally:
            stop.set()

    _run_in_threads([lambda k=k: serve(k) for k in range(4)] + [update], timeout=60)
    assert not wrong, f"{len(wrong)} calls saw a row of no version at or after their start: {wrong[0]}"
    assert min(calls) >= 10, f"calls per thread {calls}: too few to overlap the updates"
    np.testing.assert_array_equal(gg.lookup([upd])[0], versions[-1])
    d.close()


def test_gpu_store_engine_follows_tiemb_update(redis_cluster, tmp_path, seed):
    """GpuEmbeddingEngine.from_store (the TF op's GPU engine) follows `tiemb
    update` within the store's refresh_seconds plus one refresh, with no
    refresh() call: its refresher switches the remote table, the next GPU
    call follows."""
    from tiemb import store as table_store

    period = 0.3
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((2000, 8)).astype(np.float32)
    store = str(tmp_path / "s")
    table_store.write_store(store, {"a.tiemb": table}, max_batch_size=MAX_BATCH * MAX_NNZ, slot_num=1,
                            max_nnz=MAX_NNZ, tiers={"cache_percentage": 0.1})
    s = dist.DistributedSettings(redis_cluster.address, namespace=f"gpustoreupd{seed}", refresh_seconds=period)
    dist.publish_store(store, s, model="m", cpu_cache_percentage=0.3)
    gpu = tiemb.GpuEmbeddingEngine.from_store(store)
    g = gpu.group([tiemb.Slot(0, mode="gather")])
    upd = np.array([1, 2, 1500], np.int64)
    for _ in range(3):
        np.testing.assert_array_equal(g.lookup([upd])[0], table[upd])  # cached now
    new = rng.standard_normal((3, 8)).astype(np.float32)
    rows_file = str(tmp_path / "rows.npz")
    np.savez(rows_file, ids=upd, rows=new)
    subprocess.run([sys.executable, "-m", "tiemb", "update", store, "--table", "a.tiemb", "--rows", rows_file],
                   check=True, capture_output=True, timeout=60,
                   cwd=str(tmp_path))  # not the checkout: its uncompiled tiemb/ would shadow the installed one
    t0 = time.monotonic()
    while not np.array_equal(g.lookup([upd])[0], new):
        assert time.monotonic() - t0 < period + 2.0, "update not served within refresh_seconds + 2 s"
        time.sleep(0.01)
    want = table.copy()
    want[upd] = new
    for lo in range(0, 2000, 250):
        ids = np.arange(lo, lo + 250, dtype=np.int64)
        np.testing.assert_array_equal(g.lookup([ids])[0], want[ids])
