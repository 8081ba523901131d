"""CPU serving from the cluster: exact against the all-resident engine
(bit for bit) and against TensorFlow's lookups, one round trip per master
per call, per-tier counts."""

import numpy as np
import pytest

import tiemb
import tiemb._C as C
from tiemb import distributed as dist
from oracle import assert_matches_tf, random_slot

# TensorFlow is the oracle (absent on the GPU machine: skipped there).
pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")


def settings(cluster, **kw):
    return dist.DistributedSettings(cluster.address, **kw).validate()


def remote_engine(cluster, tables, *, model, host_share, profile=None, max_batch=64, max_nnz=5, block_rows=4,
                  namespace="t", refresh_seconds=0.0):
    """(engine, DistributedTables) with `tables` published and a host tier of host_share of each."""
    s = settings(cluster, namespace=namespace)
    client = dist.connect(s)
    for name, t in tables.items():
        dist.publish_table(client, namespace, model, name, t, block_rows=block_rows)
    engine = tiemb.EmbeddingEngine(max_batch, len(tables), max_nnz)
    hosts = {n: dist.host_ids(t.shape[0], host_share, None if profile is None else profile.get(n))
             for n, t in tables.items()}
    d = dist.DistributedTables(engine, s, model, list(tables), hosts, refresh_seconds=refresh_seconds)
    return engine, d


def resident_engine(tables, max_batch=64, max_nnz=5):
    engine = tiemb.EmbeddingEngine(max_batch, len(tables), max_nnz)
    ids = {n: engine.add_table(t) for n, t in tables.items()}
    return engine, ids


@pytest.mark.parametrize("table_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("mode, combiner, weighted, default_id", [
    ("plain", "sum", False, False), ("plain", "mean", True, False), ("safe", "sqrtn", True, True),
    ("safe", "mean", False, False)])
def test_remote_equals_resident_and_tf(redis_cluster, seed, table_dtype, mode, combiner, weighted, default_id):
    rng = np.random.default_rng(seed)
    cases = [random_slot(rng, dim=int(rng.choice([3, 16])), table_dtype=table_dtype, id_dtype=np.int64,
                         combiner=combiner, mode=mode, weighted=weighted, default_id=default_id, vocab=300)
             for _ in range(2)]
    tables = {f"t{i}": c.table for i, c in enumerate(cases)}
    model = f"serve{seed}{mode}{combiner}{np.dtype(table_dtype).name}"
    eng, d = remote_engine(redis_cluster, tables, model=model, host_share=0.3)
    res, res_ids = resident_engine(tables)
    slots = [tiemb.Slot(d.table_ids[f"t{i}"], c.combiner, c.mode, c.default_id) for i, c in enumerate(cases)]
    rslots = [tiemb.Slot(res_ids[f"t{i}"], c.combiner, c.mode, c.default_id) for i, c in enumerate(cases)]
    kw = dict(ids=[c.ids for c in cases], segment_ids=[c.segment_ids for c in cases],
              weights=[c.weights for c in cases], num_rows=[c.num_rows if mode == "safe" else None for c in cases])
    before = d.client.stats()["round_trips"]
    got = eng.group(slots).lookup(**kw)
    trips = d.client.stats()["round_trips"] - before
    want = res.group(rslots).lookup(**kw)
    for i, c in enumerate(cases):
        assert np.array_equal(got[i], want[i]), f"slot {i}: remote rows differ from the resident engine"
        assert_matches_tf(got[i], c, 4, f"slot {i}")
    # Both slots' misses in one pipelined batch: at most one trip per master.
    assert 1 <= trips <= 3
    st = d.stats()["tables"]
    for i, c in enumerate(cases):
        valid = np.unique(c.ids[c.ids >= 0])
        if c.default_id is not None:
            valid = np.union1d(valid, [c.default_id])
        s = st[f"t{i}"]
        assert s["host_hits"] + s["cluster_rows"] == len(valid)
        hot = set(dist.host_ids(300, 0.3, None).tolist())
        assert s["host_hits"] == len([v for v in valid if v in hot])
        assert s["host_rows"] == 90
    d.close()


def test_gather_and_dense_matrix_modes(redis_cluster, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((200, 8)).astype(np.float32)
    eng, d = remote_engine(redis_cluster, {"emb": table}, model=f"gather{seed}", host_share=0.1)
    res, rid = resident_engine({"emb": table})
    ids = rng.integers(-200, 200, size=(16, 4)).astype(np.int64)  # Keras indexing: negatives wrap
    g = eng.group([tiemb.Slot(d.table_ids["emb"], "sum", "gather", wrap_negative=True)]).lookup([ids])[0]
    assert np.array_equal(g, table[ids])
    dense = rng.integers(-1, 200, size=(32, 5)).astype(np.int32)  # -1 padded multi-hot
    g2 = eng.group([tiemb.Slot(d.table_ids["emb"], "mean", "safe")]).lookup([dense], num_rows=[32])[0]
    w2 = res.group([tiemb.Slot(rid["emb"], "mean", "safe")]).lookup([dense], num_rows=[32])[0]
    assert np.array_equal(g2, w2)
    d.close()


def test_hottest_rows_stay_on_the_host(redis_cluster, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((1000, 4)).astype(np.float32)
    hot = rng.choice(1000, 100, replace=False)
    profile = {"emb": np.repeat(hot, 5)}
    eng, d = remote_engine(redis_cluster, {"emb": table}, model=f"hot{seed}", host_share=0.1, profile=profile,
                           max_batch=128)
    g = eng.group([tiemb.Slot(d.table_ids["emb"], "sum", "gather")])
    before = d.client.stats()["round_trips"]
    out = g.lookup([hot.astype(np.int64)])[0]
    assert np.array_equal(out, table[hot])
    s = d.stats()["tables"]["emb"]
    assert s["host_hits"] == 100 and s["cluster_rows"] == 0
    assert d.client.stats()["round_trips"] == before  # nothing read from the cluster
    d.close()


def test_missing_table_namespace_and_version(redis_cluster):
    s = settings(redis_cluster, namespace="nowhere")
    eng = tiemb.EmbeddingEngine(8, 1, 1)
    with pytest.raises(dist.DistributedError, match=r"distributed table 'ghost': not published in namespace 'nowhere'"):
        dist.DistributedTables(eng, s, "m", ["ghost"], {})
    client = dist.connect(s)
    dist.publish_table(client, "nowhere", "m", "real", np.ones((4, 2), np.float32))
    client.run([["SET", "nowhere:m:real:current", "0123456789abcdef"]])
    with pytest.raises(dist.DistributedError, match=r"'real': version 0123456789abcdef is not in the cluster"):
        dist.DistributedTables(eng, s, "m", ["real"], {})


def test_publish_is_idempotent_and_resumable(redis_cluster, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((100, 4)).astype(np.float32)
    client = dist.connect(settings(redis_cluster))
    model = f"idem{seed}"
    first = dist.publish_table(client, "t", model, "emb", table, block_rows=8)
    assert first["written_values"] == 13 and first["skipped_values"] == 0
    again = dist.publish_table(client, "t", model, "emb", table, block_rows=8)
    assert again["written_values"] == 0 and again["version"] == first["version"]
    # An interrupted publish: some blocks there, no meta. Only the rest is written.
    other = table + 1
    v = dist.content_version(other)
    client.run([["SET", f"t:{model}:emb:{v}:b{k}", other[k * 8:(k + 1) * 8].tobytes()] for k in range(5)])
    resumed = dist.publish_table(client, "t", model, "emb", other, block_rows=8)
    assert resumed["version"] == v and resumed["written_values"] == 8 and resumed["skipped_values"] == 5
    layout = dist.resolve_layout(client, "t", model, "emb", v)
    blocks = dist.publish.read_blocks(client, layout, range(13))
    assert np.array_equal(np.concatenate([blocks[k] for k in range(13)]), other)
