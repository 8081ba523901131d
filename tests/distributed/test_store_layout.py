"""A published store records the cluster in store.json and carries only the
host tier's rows; the C++ loader (the TF op's engine) and open_store serve it
exactly; the layout before (distributed.json) is refused with the fix."""

import json
import os

import numpy as np
import pytest

import tiemb
import tiemb._C as C
from tiemb import distributed as dist
from tiemb import store as table_store

# TensorFlow is the oracle (absent on the GPU machine: skipped there).
pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")

ROWS, DIM = 1000, 16


def _table_bytes(store):
    """Bytes of the store's files other than its description."""
    return sum(os.path.getsize(os.path.join(store, f)) for f in os.listdir(store)
               if f != "store.json" and os.path.isfile(os.path.join(store, f)))


def _store(path, seed):
    rng = np.random.default_rng(seed)
    tables = {"a.tiemb": rng.standard_normal((ROWS, DIM)).astype(np.float32),
              "b.tiemb": rng.standard_normal((40, 4)).astype(np.float16)}
    table_store.write_store(str(path), tables, max_batch_size=128, slot_num=2, max_nnz=4)
    return tables


def _gather_oracle(table, ids):
    import tensorflow as tf

    return tf.gather(tf.constant(table), tf.constant(ids)).numpy()


def test_published_store_keeps_only_the_host_tier(redis_cluster, tmp_path, seed):
    store = str(tmp_path / "s")
    tables = _store(store, seed)
    before = _table_bytes(store)
    settings = dist.DistributedSettings(redis_cluster.address, namespace=f"layout{seed}", refresh_seconds=0.0)
    out = dist.publish_store(store, settings, model="m", cpu_cache_percentage=0.3)
    after = _table_bytes(store)
    host = {n: out["tables"][n]["host_rows"] for n in tables}
    assert host == {"a.tiemb": 300, "b.tiemb": 12}
    # Measured: the cluster-only rows left the store; the host tier's ids came in.
    header = 64
    cluster_only = sum((t.shape[0] - host[n]) * t.shape[1] * t.itemsize for n, t in tables.items())
    ids_bytes = 8 * sum(host.values())
    assert before - after == cluster_only - ids_bytes
    assert table_store.check_store(store) == []
    m = table_store.read_store(store)
    assert m["rows"] == [ROWS, 40] and m["files"] == ["a.tiemb.host", "b.tiemb.host"]
    assert m["file_bytes"][0] == header + 300 * DIM * 4
    d = m["distributed"]
    assert d["namespace"] == f"layout{seed}" and d["model"] == "m" and d["settings"]["refresh_seconds"] == 0.0
    assert [t["version"] for t in d["tables"]] == [dist.content_version(t) for t in tables.values()]

    # The TF op's engine (C++ loader, host tier from the store's file) and
    # open_store (host tier from the cluster) against TensorFlow's gather.
    ids = np.random.default_rng(seed).integers(0, ROWS, 32 * 4).astype(np.int64)
    ids_b = np.random.default_rng(seed + 1).integers(0, 40, 32 * 4).astype(np.int64)
    engine, remote = dist.open_store(store, refresh_seconds=0)
    for eng in (_op_engine(store), engine):
        g = eng.group([tiemb.Slot(0, "sum", "gather"), tiemb.Slot(1, "sum", "gather")])
        got_a, got_b = g.lookup([ids, ids_b])
        np.testing.assert_array_equal(got_a, _gather_oracle(tables["a.tiemb"], ids))
        np.testing.assert_array_equal(got_b, _gather_oracle(tables["b.tiemb"], ids_b).astype(got_b.dtype))
    s = remote.stats()["tables"]["a.tiemb"]
    assert s["host_rows"] == 300 and s["cluster_rows"] > 0
    remote.close()

    # Published again (from the cluster: the store no longer has the rows):
    # nothing written, the same bytes on disk.
    again = dist.publish_store(store, settings, cpu_cache_percentage=0.3)
    assert all(t["written_values"] == 0 for t in again["tables"].values())
    assert _table_bytes(store) == after and table_store.check_store(store) == []


def test_damaged_distributed_fields_are_named(redis_cluster, tmp_path, seed):
    store = str(tmp_path / "s")
    _store(store, seed)
    settings = dist.DistributedSettings(redis_cluster.address, namespace=f"damaged{seed}", refresh_seconds=0.0)
    dist.publish_store(store, settings, model="m", cpu_cache_percentage=0.5)
    text = open(os.path.join(store, "store.json")).read()
    doc = json.loads(text)
    doc["distributed"]["tables"][0]["host_rows"] = ROWS + 1
    with pytest.raises(ValueError, match=r"distributed\.tables\[0\]\.host_rows must be <= the table's rows \(1000\), "
                                         r"got 1001"):
        C.parse_store_description(_sealed(doc), "x/store.json")
    doc["distributed"]["tables"][0]["host_rows"] = 10
    doc["distributed"]["tables"][0]["host_ids"] = "../ids"
    with pytest.raises(ValueError, match=r"distributed\.tables\[0\]\.host_ids must be a file name in the store"):
        C.parse_store_description(_sealed(doc), "x/store.json")
    doc["distributed"]["tables"][0]["host_ids"] = "a.tiemb.host.i64"
    doc["distributed"]["settings"]["colour"] = 1
    with pytest.raises(ValueError, match=r"unknown key distributed\.settings\.colour"):
        C.parse_store_description(_sealed(doc), "x/store.json")
    ids_file = os.path.join(store, "a.tiemb.host.i64")
    raw = bytearray(open(ids_file, "rb").read())
    raw[0] ^= 1
    open(ids_file, "wb").write(bytes(raw))
    problems = table_store.check_store(store)
    assert len(problems) == 1 and "a.tiemb.host.i64" in problems[0] and "checksum mismatch" in problems[0]
    with pytest.raises(ValueError, match="a.tiemb.host.i64.*checksum mismatch"):
        tiemb._C.CpuEngine.from_store(store)


def _sealed(doc):
    """A description's text with its own checksum, as tiemb/store.py seals it."""
    doc = dict(doc, checksum="00000000")
    text = json.dumps(doc, indent=2) + "\n"
    head, _, tail = text.rpartition('"checksum": "00000000"')
    return f'{head}"checksum": "{C.crc32c(text.encode()):08x}"{tail}'


def _op_engine(store):
    """The engine TiembLookup's CPU kernel builds for the store (csrc/cpu/store_engine.cc),
    behind the Python engine's lookup API."""
    e = tiemb.EmbeddingEngine.__new__(tiemb.EmbeddingEngine)
    e._engine = C.CpuEngine.from_store(store)
    m = table_store.read_store(store)
    e.config = tiemb.EngineConfig(m["max_batch_size"], m["slot_num"], m["max_nnz"])
    return e


def test_old_layout_is_refused_with_the_fix(tmp_path, seed):
    store = str(tmp_path / "s")
    _store(store, seed)
    os.makedirs(os.path.join(store, "distributed"))
    with open(os.path.join(store, "distributed", "remote.txt"), "w") as f:
        f.write("tiemb-remote 1\naddress 127.0.0.1:1\nnamespace tiemb\nmodel m\n")
    with open(os.path.join(store, "distributed.json"), "w") as f:
        json.dump({"format": 1, "namespace": "tiemb", "model": "m", "params": {}, "tables": {}}, f)
    with pytest.raises(ValueError, match="has distributed.json but its store.json records no cluster.*tiemb publish"):
        tiemb._C.CpuEngine.from_store(store)
    with pytest.raises(dist.DistributedError, match="has distributed.json but its store.json records no cluster"):
        dist.open_store(store)


def test_republish_to_another_namespace_reads_the_recorded_one(redis_cluster, tmp_path, seed):
    store = str(tmp_path / "s")
    tables = _store(store, seed)
    first = dist.DistributedSettings(redis_cluster.address, namespace=f"from{seed}", refresh_seconds=0.0)
    dist.publish_store(store, first, model="m", cpu_cache_percentage=0.2)
    second = dist.DistributedSettings(redis_cluster.address, namespace=f"to{seed}", refresh_seconds=0.0)
    out = dist.publish_store(store, second, cpu_cache_percentage=0.5)  # re-tiered too: more host rows
    assert out["tables"]["a.tiemb"]["written_values"] == -(-ROWS // dist.DEFAULT_BLOCK_ROWS)
    assert table_store.read_store(store)["distributed"]["namespace"] == f"to{seed}"
    assert out["tables"]["a.tiemb"]["host_rows"] == 500 and table_store.check_store(store) == []
    engine, remote = dist.open_store(store, refresh_seconds=0)
    ids = np.random.default_rng(seed).integers(0, ROWS, 100).astype(np.int64)
    got = engine.group([tiemb.Slot(0, "sum", "gather")]).lookup([ids])[0]
    np.testing.assert_array_equal(got, _gather_oracle(tables["a.tiemb"], ids))
    remote.close()


def test_old_layout_is_republished_into_store_json(redis_cluster, tmp_path, seed):
    """The fix the refusal names: tiemb publish rewrites an old-layout store
    (full table files, distributed.json) into the new one, keeping its host order."""
    from tiemb.cli import main

    store = str(tmp_path / "s")
    tables = _store(store, seed)
    os.makedirs(os.path.join(store, "distributed"))
    order = np.random.default_rng(seed).permutation(ROWS)[:300].astype("<i8")
    order.tofile(os.path.join(store, "distributed", "a.tiemb.host.i64"))
    with open(os.path.join(store, "distributed", "remote.txt"), "w") as f:
        f.write("tiemb-remote 1\n")
    with open(os.path.join(store, "distributed.json"), "w") as f:
        json.dump({"format": 1}, f)
    assert main(["publish", store, "--address", redis_cluster.address, "--namespace", f"old{seed}",
                 "--cpu-cache-percentage", "0.3"]) == 0
    assert not os.path.exists(os.path.join(store, "distributed.json"))
    assert not os.path.exists(os.path.join(store, "distributed"))
    d = table_store.read_store(store)["distributed"]
    assert np.array_equal(np.fromfile(os.path.join(store, d["tables"][0]["host_ids"]), "<i8"), order)
    ids = np.random.default_rng(seed).integers(0, ROWS, 64).astype(np.int64)
    got = _op_engine(store).group([tiemb.Slot(0, "sum", "gather")]).lookup([ids])[0]
    np.testing.assert_array_equal(got, _gather_oracle(tables["a.tiemb"], ids))
