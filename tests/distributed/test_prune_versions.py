"""tiemb update keeps the last K versions readable (default 2) and deletes
the blocks only older versions read, never one of a kept version or of the
published one. The oracle: each version's rows, computed here from the
updates, read back from the cluster and served by the CPU engine."""

import numpy as np
import pytest

import tiemb
import tiemb._C as C
from tiemb import distributed as dist
from tiemb.distributed.publish import read_blocks

pytestmark = pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")

NS, ROWS, DIM, BR = "prune", 64, 2, 4
# (ids, blocks they change): every update rewrites block 0 and one other.
UPDATES = [([1, 20], [0, 5]), ([2, 40], [0, 10]), ([3, 60], [0, 15]), ([4], [1])]


def _setup(cluster, seed, keep):
    """Publishes a table, applies UPDATES with keep_versions=keep; returns
    (client, model, table per version oldest first, version names, a gather
    group and its DistributedTables, serving version 0 until refreshed)."""
    client = dist.connect(dist.DistributedSettings(cluster.address, namespace=NS).validate())
    model = f"prune{seed}{keep}"
    table = np.arange(ROWS * DIM, dtype=np.float32).reshape(ROWS, DIM)
    versions = [dist.publish_table(client, NS, model, "emb", table, block_rows=BR)["version"]]
    engine = tiemb.EmbeddingEngine(ROWS, 1, 1)
    d = dist.DistributedTables(engine, dist.DistributedSettings(cluster.address, namespace=NS).validate(), model,
                               ["emb"], {"emb": np.arange(8)}, refresh_seconds=0)
    group = engine.group([tiemb.Slot(d.table_ids["emb"], "sum", "gather")])
    tables = [table]
    for k, (ids, _) in enumerate(UPDATES):
        new = tables[-1].copy()
        new[ids] = -(k + 1)
        r = dist.update_table(client, NS, model, "emb", np.array(ids), new[ids], keep_versions=keep)
        tables.append(new)
        versions.append(r["version"])
    return client, model, tables, versions, group, d


def _exists(client, model, version, block):
    return client.run([["EXISTS", f"{NS}:{model}:emb:{version}:b{block}"]])[0] == 1


def _read_version(client, model, version):
    layout = dist.resolve_layout(client, NS, model, "emb", version)
    blocks = read_blocks(client, layout, range(ROWS // BR))
    return np.concatenate([blocks[b] for b in range(ROWS // BR)])


def test_update_keeps_two_versions_and_the_published_one(redis_cluster, seed):
    client, model, tables, versions, group, d = _setup(redis_cluster, seed, keep=2)
    v = versions
    # V1:b0 left with V1 (after the third update), V2:b0 with V2 (after the fourth).
    assert not _exists(client, model, v[1], 0) and not _exists(client, model, v[2], 0)
    # Still read by a kept version: V1:b5 (V3 and V4 read it), V2:b10.
    assert _exists(client, model, v[1], 5) and _exists(client, model, v[2], 10)
    assert all(_exists(client, model, v[0], b) for b in range(ROWS // BR))  # the published version, whole
    for k in (0, 3, 4):  # published and kept versions read back whole
        np.testing.assert_array_equal(_read_version(client, model, v[k]), tables[k], err_msg=f"version {k}")
    with pytest.raises(dist.DistributedError, match=rf"key '{NS}:{model}:emb:{v[2]}:b0' is missing"):
        _read_version(client, model, v[2])
    # A process still on the published version serves it whole, then
    # refreshes straight to the current version and serves that.
    ids = np.arange(ROWS, dtype=np.int64)
    np.testing.assert_array_equal(group.lookup([ids])[0], tables[0])
    assert d.refresh() == {"emb": v[-1]}
    np.testing.assert_array_equal(group.lookup([ids])[0], tables[-1])
    d.close()


def test_sweep_prunes_a_table_updated_without_pruning(redis_cluster, seed):
    client, model, tables, versions, _, d = _setup(redis_cluster, seed, keep=None)
    assert all(_exists(client, model, v, 0) for v in versions[:3])
    r = dist.prune_versions(client, NS, model, "emb", keep=2, sweep=True)
    assert r == {"deleted": 2, "kept": [versions[4], versions[3], versions[0]]}
    assert not _exists(client, model, versions[1], 0) and not _exists(client, model, versions[2], 0)
    assert dist.prune_versions(client, NS, model, "emb", keep=2, sweep=True)["deleted"] == 0
    np.testing.assert_array_equal(_read_version(client, model, versions[4]), tables[4])
    np.testing.assert_array_equal(_read_version(client, model, versions[3]), tables[3])
    d.close()


def test_keep_versions_below_two_is_refused(redis_cluster, seed):
    client = dist.connect(dist.DistributedSettings(redis_cluster.address, namespace=NS).validate())
    model = f"prunebad{seed}"
    dist.publish_table(client, NS, model, "emb", np.zeros((8, 2), np.float32), block_rows=BR)
    with pytest.raises(dist.DistributedError, match=r"table 'emb': keep_versions must be an int >= 2 .* got 1"):
        dist.update_table(client, NS, model, "emb", np.array([1]), np.ones((1, 2), np.float32), keep_versions=1)
    with pytest.raises(dist.DistributedError, match=r"keep_versions must be an int >= 2 .* got True"):
        dist.prune_versions(client, NS, model, "emb", keep=True)


def test_cli_update_keep_versions(redis_cluster, tmp_path, seed, capsys):
    from tiemb import store as table_store
    from tiemb.cli import main

    store = str(tmp_path / "s")
    table = np.arange(32, dtype=np.float32).reshape(16, 2)
    table_store.write_store(store, {"t": table}, max_batch_size=16, slot_num=1, max_nnz=1)
    dist.publish_store(store, dist.DistributedSettings(redis_cluster.address, namespace=f"prunecli{seed}"), model="m")
    np.savez(tmp_path / "rows.npz", ids=np.array([0]), rows=np.ones((1, 2), np.float32))
    argv = ["update", store, "--table", "t", "--rows", str(tmp_path / "rows.npz")]
    assert main(argv + ["--keep-versions", "1"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "keep_versions must be an int >= 2" in err and "got 1" in err
    for _ in range(4):  # each rewrites block 0: with 2 kept, versions 1 and 2 lose theirs
        assert main(argv) == 0
    assert "1 attempt(s); 1 blocks of older versions deleted" in capsys.readouterr().out.splitlines()[-1]
    assert main(argv + ["--keep-versions", "0"]) == 0
    assert "0 blocks of older versions deleted" in capsys.readouterr().out
    engine, tables = dist.open_store(store, refresh_seconds=0)
    got = engine.group([tiemb.Slot(tables.table_ids["t"], "sum", "gather")]).lookup([np.arange(16)])[0]
    want = table.copy()
    want[0] = 1
    np.testing.assert_array_equal(got, want)
    tables.close()
