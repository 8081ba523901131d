"""optimize() with tiemb/enable_distributed publishes the model's tables; the
store records namespace and versions; `tiemb publish` / `tiemb update` on it."""

import json
import os
import sys

import numpy as np
import pytest

import tiemb
import tiemb._C as C
from tiemb import distributed as dist
from tiemb import store as table_store

# TensorFlow is the oracle (absent on the GPU machine: skipped there).
pytest.importorskip("tensorflow")
pytestmark = pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")


def lookup_model(path, seed):
    """A tf.Module as outside code writes one (the reliability tests' model):
    ids [batch, 4] -> embedding_lookup_sparse -> a dense layer."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reliability"))
    from rel_models import lookup_model as write

    return write(path, seed)


def _optimize(src, out, address, namespace):
    cfg = tiemb.OptimizeConfig()
    for key, field, value in [("tiemb/enable_distributed", "b", True), ("tiemb/distributed_address", "s", address),
                              ("tiemb/distributed_namespace", "s", namespace),
                              ("tiemb/cpu_cache_percentage", "f", 0.3), ("tiemb/cache_percentage", "f", 0.2)]:
        setattr(cfg.parameter_map[key], field, value)
    feed = {"ids": np.random.default_rng(1).integers(0, 50, (16, 4)).astype(np.int64)}
    return tiemb.optimize(src, 0, 1, ["16*4"], test_data=[feed], save_path=out,
                          optimization_config=cfg, runs=2, overwrite=True)


def test_optimize_publishes_and_serves_exactly(redis_cluster, tmp_path, seed, capsys):
    import tensorflow as tf

    src = lookup_model(str(tmp_path / "src"), seed)
    table = tf.saved_model.load(src).table.numpy()
    ns = f"opt{seed}"
    _, report = _optimize(src, str(tmp_path / "model"), redis_cluster.address, ns)
    info = report.cache["distributed"]
    assert info["namespace"] == ns and info["model"] == "model"
    (name, t), = info["tables"].items()
    assert t["written_values"] == 4  # 50 rows in blocks of 16
    seen = np.random.default_rng(1).integers(0, 50, (16, 4)).ravel()  # the test data's ids
    hot15 = np.unique(seen, return_counts=True)
    store = os.path.join(tmp_path, "model", "assets")
    doc = dist.read_distributed(store)
    (entry,) = doc["tables"]
    assert entry["name"] == name and doc["namespace"] == ns and doc["model"] == "model"
    assert entry["version"] == t["version"] == dist.content_version(table)
    hot = np.fromfile(os.path.join(store, entry["host_ids"]), dtype="<i8")
    assert len(hot) == entry["host_rows"] == 15  # ceil(0.3 * 50), the test data's most frequent ids first
    assert t["test_data_host_hit_rate"] == pytest.approx(np.isin(seen, hot).mean())
    # The 15 most frequent ids are the host tier: it serves exactly their share.
    assert t["test_data_host_hit_rate"] == pytest.approx(np.sort(hot15[1])[::-1][:15].sum() / seen.size)
    # On disk only the host tier's rows (in the ids' order), checked by the store's own reader.
    m = C.read_store_manifest(store)
    i = m["tables"].index(name)
    assert m["rows"][i] == 50 and table_store.check_store(store) == []
    kept, dim, _, _ = C.read_table_rows(os.path.join(store, m["files"][i]), [])
    assert kept == 15 and np.array_equal(dist.read_store_table(store, m["files"][i]), table[hot])
    assert not os.path.exists(os.path.join(store, name)) and not os.path.exists(os.path.join(store, "distributed"))

    # Served from the cluster: TensorFlow's lookup on the original table is the oracle.
    engine, tables = dist.open_store(store, refresh_seconds=0)
    g = engine.group([tiemb.Slot(tables.table_ids[name], "sum", "plain")])
    ids = np.random.default_rng(seed).integers(0, 50, 64).astype(np.int64)
    seg = np.repeat(np.arange(16), 4).astype(np.int64)  # [16, 4] ids, as the model takes them
    got = g.lookup([ids], segment_ids=[seg])[0]
    sp = tf.SparseTensor(np.stack([seg, np.tile(np.arange(4), 16)], 1), ids, [16, 4])
    want = tf.nn.embedding_lookup_sparse(tf.constant(table), sp, None, combiner="sum").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    s = tables.stats()["tables"][name]
    assert s["host_hits"] > 0 and s["cluster_rows"] > 0 and s["host_rows"] == 15

    # Again: the same content version is found, nothing written.
    _, again = _optimize(src, str(tmp_path / "model"), redis_cluster.address, ns)
    assert again.cache["distributed"]["tables"][name]["written_values"] == 0

    # tiemb publish: idempotent too; tiemb update: a new version served after refresh.
    from tiemb.cli import main

    assert main(["publish", str(tmp_path / "model"), "--address", redis_cluster.address]) == 0
    assert "0 values written" in capsys.readouterr().out
    new = np.full((2, table.shape[1]), 3.5, np.float32)
    np.savez(tmp_path / "rows.npz", ids=np.array([0, 49]), rows=new)
    assert main(["update", str(tmp_path / "model"), "--table", name, "--rows", str(tmp_path / "rows.npz")]) == 0
    assert tables.refresh() and np.array_equal(
        engine.group([tiemb.Slot(tables.table_ids[name], "sum", "gather")]).lookup([np.array([0, 49, 1])])[0],
        np.vstack([new, table[1:2]]))
    tables.close()
    # A bundle carries whole tables: a published model's store has only the host tier.
    from tiemb.serving import export_bundle

    with pytest.raises(ValueError, match="tables live in a Redis Cluster"):
        export_bundle(str(tmp_path / "model"), str(tmp_path / "bundle"))


def test_cli_errors_are_one_line(tmp_path, capsys):
    from tiemb.cli import main

    from tiemb.distributed.local_cluster import free_ports

    os.makedirs(tmp_path / "s")
    tiemb.tf_ops.write_store(str(tmp_path / "s"), {"t": np.zeros((4, 2), np.float32)}, max_batch_size=4, slot_num=1,
                             max_nnz=1)
    port = free_ports(1)[0]
    assert main(["publish", str(tmp_path / "s"), "--address", f"127.0.0.1:{port}", "--retries", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"127.0.0.1:{port} unreachable" in err
    assert main(["publish", str(tmp_path / "s"), "--address", "nohost"]) == 1
    assert "malformed entry 'nohost'" in capsys.readouterr().err
    assert main(["update", str(tmp_path / "s"), "--table", "t", "--rows", "x.npz"]) == 1
    assert "not published (its store.json records no cluster)" in capsys.readouterr().err


_SERVE_SCRIPT = r'''
import sys, time, json
import numpy as np
import tensorflow as tf
import tiemb
from tiemb import distributed as dist

src, opt, address, ns, period = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
orig = tf.saved_model.load(src)
table, kernel = orig.table.numpy(), orig.kernel.numpy()
model = tf.saved_model.load(opt)
fn = model.signatures["serving_default"]
ids = np.random.default_rng(5).integers(0, 50, (16, 4)).astype(np.int64)

def expected(t):
    sp = tf.sparse.from_dense(ids + 1)
    sp = tf.SparseTensor(sp.indices, sp.values - 1, sp.dense_shape)
    return (tf.nn.embedding_lookup_sparse(tf.constant(t), sp, None, combiner="sum").numpy() @ kernel)

got = fn(ids=tf.constant(ids))["out"].numpy()
# TensorFlow on the original model is the oracle; the store has only the host tier's rows.
np.testing.assert_allclose(got, orig.signatures["serving_default"](ids=tf.constant(ids))["out"].numpy(),
                           rtol=1e-5, atol=1e-5)
np.testing.assert_allclose(got, expected(table), rtol=1e-5, atol=1e-5)
# Every row changes; the op's engine must read the cluster to see it.
doc = dist.read_distributed(opt + "/assets")
name = doc["tables"][0]["name"]
client = dist.connect(dist.DistributedSettings(address, namespace=ns))
new = (table * -2.0 + 1.0).astype(np.float32)
dist.update_table(client, ns, doc["model"], name, np.arange(50), new)
t0 = time.monotonic()
while True:
    got = fn(ids=tf.constant(ids))["out"].numpy()
    if np.allclose(got, expected(new), rtol=1e-5, atol=1e-5):
        break
    assert np.allclose(got, expected(table), rtol=1e-5, atol=1e-5), "neither the old nor the new version"
    assert time.monotonic() - t0 < period + 2.0, "update not served by the TF op within refresh_seconds + 2 s"
    time.sleep(0.02)
print(json.dumps({"served_after_s": time.monotonic() - t0}))
'''


def test_tf_op_serves_from_the_cluster_and_refreshes(redis_cluster, tmp_path, seed):
    """The optimized SavedModel in a fresh process: TiembLookup's engine reads the
    cluster (an update of every row shows in its outputs within refresh_seconds)."""
    import subprocess
    import sys

    src = lookup_model(str(tmp_path / "src"), seed)
    ns = f"tfop{seed}"
    cfg = tiemb.OptimizeConfig()
    cfg.parameter_map["tiemb/enable_distributed"].b = True
    cfg.parameter_map["tiemb/distributed_address"].s = redis_cluster.address
    cfg.parameter_map["tiemb/distributed_namespace"].s = ns
    cfg.parameter_map["tiemb/cpu_cache_percentage"].f = 0.3
    cfg.parameter_map["tiemb/cache_percentage"].f = 0.2
    cfg.parameter_map["tiemb/refresh_seconds"].f = 0.5
    feed = {"ids": np.random.default_rng(1).integers(0, 50, (16, 4)).astype(np.int64)}
    tiemb.optimize(src, 0, 1, ["16*4"], test_data=[feed], save_path=str(tmp_path / "opt"), optimization_config=cfg,
                   runs=2)
    r = subprocess.run([sys.executable, "-c", _SERVE_SCRIPT, src, str(tmp_path / "opt"), redis_cluster.address, ns,
                        "0.5"], capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path))   # not the checkout: its uncompiled tiemb/ would shadow the installed one
    assert r.returncode == 0, r.stderr[-3000:]
    assert "served_after_s" in r.stdout
