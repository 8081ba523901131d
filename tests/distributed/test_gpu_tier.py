"""The GPU engine's lowest tier reads from the cluster: a GPU cache over a
remote table's host tier and the Redis Cluster, exact against the CPU engine
over the same cluster and the all-resident GPU engine, at most one round trip
per master per call. Needs a GPU and redis-server (benchmarks/gpu_suite.sh
unpacks it from .debs/ on the GPU machine)."""

import numpy as np
import pytest

import tiemb
import tiemb._C as C
from tiemb import distributed as dist

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")]

MAX_BATCH, MAX_NNZ, SLOT_NUM = 64, 6, 3
TIERS = {"async": tiemb.TierConfig(cache_percentage=0.1),
         "sync": tiemb.TierConfig(cache_percentage=0.1, hit_rate_threshold=1.0),
         "resident": None}


def _remote_tables(cluster, tables, model, host_share):
    """(CPU engine, DistributedTables, {name: RemoteTable}) over `tables` published to `cluster`."""
    s = dist.DistributedSettings(cluster.address, namespace="gputier", refresh_seconds=0.0).validate()
    client = dist.connect(s)
    for name, t in tables.items():
        dist.publish_table(client, s.namespace, model, name, t, block_rows=8)
    engine = tiemb.EmbeddingEngine(MAX_BATCH, SLOT_NUM, MAX_NNZ)
    hosts = {n: dist.host_ids(t.shape[0], host_share, None) for n, t in tables.items()}
    d = dist.DistributedTables(engine, s, model, list(tables), hosts, refresh_seconds=0)
    return engine, d


@pytest.mark.parametrize("tiers", list(TIERS))
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16])
def test_gpu_over_the_cluster_equals_cpu_and_resident(redis_cluster, seed, tiers, table_dtype):
    rng = np.random.default_rng(seed)
    tables = {"wide": rng.standard_normal((3000, 16)).astype(table_dtype),
              "narrow": rng.standard_normal((700, 3)).astype(table_dtype)}
    model = f"gpu{seed}{tiers}{np.dtype(table_dtype).name}"
    cpu, d = _remote_tables(redis_cluster, tables, model, host_share=0.3)
    gpu = tiemb.GpuEmbeddingEngine(MAX_BATCH, SLOT_NUM, MAX_NNZ)
    # The GPU engine reads through the same RemoteTable objects as the CPU engine.
    tg = {n: gpu.add_remote_table(d._remote[n], TIERS[tiers]) for n in tables}
    res = tiemb.GpuEmbeddingEngine(MAX_BATCH, SLOT_NUM, MAX_NNZ)
    tr = {n: res.add_table(t) for n, t in tables.items()}

    def slots(ids):
        return [tiemb.Slot(ids["wide"], "sum", "plain"), tiemb.Slot(ids["narrow"], "mean", "safe"),
                tiemb.Slot(ids["wide"], mode="gather")]

    gc, gg, gr = cpu.group(slots(d.table_ids)), gpu.group(slots(tg)), res.group(slots(tr))
    masters = len(d.client.masters())
    for _ in range(4):  # misses first, then cache hits and inserts
        ids = [rng.integers(0, 3000, MAX_BATCH * 4).astype(np.int64), rng.integers(0, 700, 50).astype(np.int64),
               rng.integers(0, 3000, (MAX_BATCH, 1)).astype(np.int64)]
        # 4 ids in every sample of the first slot, 2 or 3 in the second's 20: within MAX_NNZ.
        seg = [np.repeat(np.arange(MAX_BATCH, dtype=np.int64), 4), np.sort(np.arange(50, dtype=np.int64) % 20), None]
        kw = dict(segment_ids=seg, num_rows=[None, 20, None])
        before = d.client.stats()["round_trips"]
        got = gg.lookup(ids, **kw)
        trips = d.client.stats()["round_trips"] - before
        assert trips <= masters, f"{trips} round trips for one call over {masters} masters"
        want_cpu, want_res = gc.lookup(ids, **kw), gr.lookup(ids, **kw)
        np.testing.assert_array_equal(got[2], tables["wide"][ids[2]].reshape(got[2].shape))
        for s in range(3):
            # The same kernel over the same rows: bit for bit with the resident GPU engine.
            np.testing.assert_array_equal(got[s], want_res[s], err_msg=f"slot {s} vs resident GPU ({tiers})")
            np.testing.assert_allclose(got[s], want_cpu[s], rtol=1e-3 if table_dtype == np.float16 else 1e-6,
                                       atol=1e-3 if table_dtype == np.float16 else 1e-6,
                                       err_msg=f"slot {s} vs CPU engine over the cluster ({tiers})")
    st = gpu.stats(tg["wide"])
    if tiers != "resident":
        assert st["backing_reads"] > 0 and st["hits"] > 0  # the cluster tier was read, the cache served
    d.close()


def test_missing_block_fails_the_gpu_call_naming_the_table(redis_cluster, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((400, 8)).astype(np.float32)
    model = f"gpumissing{seed}"
    _, d = _remote_tables(redis_cluster, {"t": table}, model, host_share=0.0)
    gpu = tiemb.GpuEmbeddingEngine(MAX_BATCH, 1, MAX_NNZ)
    t = gpu.add_remote_table(d._remote["t"], tiemb.TierConfig(cache_percentage=0.1), profile_ids=np.arange(40))
    g = gpu.group([tiemb.Slot(t, mode="gather")])
    layout = dist.resolve_layout(d.client, "gputier", model, "t", d.versions()["t"])
    d.client.run([["DEL", f"{layout['layers'][0]}:b45"]])  # rows 360..367: never in the warm cache
    with pytest.raises(ValueError, match=r"distributed table 't': key '.*:b45' is missing from the cluster"):
        g.lookup([np.array([1, 361], np.int64)])
    np.testing.assert_array_equal(g.lookup([np.array([1, 2], np.int64)])[0], table[[1, 2]])
    d.close()


def test_gpu_store_engine_serves_a_published_store(redis_cluster, tmp_path, seed):
    """GpuEmbeddingEngine.from_store (the TF op's GPU engine) on a store that
    keeps only the host tier: the GPU cache over the cluster, exact."""
    from tiemb import store as table_store

    rng = np.random.default_rng(seed)
    tables = {"a.tiemb": rng.standard_normal((2000, 8)).astype(np.float32),
              "b.tiemb": rng.standard_normal((300, 4)).astype(np.float16)}
    store = str(tmp_path / "s")
    table_store.write_store(store, tables, max_batch_size=MAX_BATCH * MAX_NNZ, slot_num=2, max_nnz=MAX_NNZ,
                            tiers={"cache_percentage": 0.1})
    s = dist.DistributedSettings(redis_cluster.address, namespace=f"gpustore{seed}", refresh_seconds=0.0)
    dist.publish_store(store, s, model="m", cpu_cache_percentage=0.3)
    gpu = tiemb.GpuEmbeddingEngine.from_store(store)
    g = gpu.group([tiemb.Slot(0, mode="gather"), tiemb.Slot(1, "sum", "plain")])
    for _ in range(3):
        ids = [rng.integers(0, 2000, 200).astype(np.int64), rng.integers(0, 300, 120).astype(np.int64)]
        seg = np.sort(np.arange(120, dtype=np.int64) % 30)   # 4 ids per sample, within MAX_NNZ
        got = g.lookup(ids, segment_ids=[None, seg])
        np.testing.assert_array_equal(got[0], tables["a.tiemb"][ids[0]])
        want = np.zeros((seg.max() + 1, 4), np.float32)
        np.add.at(want, seg, tables["b.tiemb"][ids[1]].astype(np.float32))
        np.testing.assert_allclose(got[1].astype(np.float32), want, rtol=2e-3, atol=2e-3)
    assert gpu.stats(0)["backing_reads"] > 0  # rows came from the cluster
