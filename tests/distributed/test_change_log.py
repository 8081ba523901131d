"""The remote table's change log: which ids each refresh changed, what the
GPU cache reads to invalidate exactly those ids (tests/distributed/
test_gpu_follows_updates.py checks the GPU side on a GPU). The oracle is
the update itself: the rows of every block an update rewrote."""

import numpy as np
import pytest

import tiemb._C as C
from tiemb import distributed as dist
from test_cpu_serving import remote_engine, settings

pytestmark = pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")

BLOCK_ROWS = 4  # remote_engine's default


def _block_rows_of(ids, rows):
    """Every row of the blocks holding `ids`: what a refresh re-reads."""
    blocks = np.unique(np.asarray(ids) // BLOCK_ROWS)
    out = (blocks[:, None] * BLOCK_ROWS + np.arange(BLOCK_ROWS)[None, :]).ravel()
    return out[out < rows].tolist()


def test_change_log_lists_each_refresh_ids(redis_cluster, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((200, 4)).astype(np.float32)
    model = f"log{seed}"
    _, d = remote_engine(redis_cluster, {"emb": table}, model=model, host_share=0.2)
    remote = d._remote["emb"]
    client = dist.connect(settings(redis_cluster))
    assert remote.refreshes == 0 and remote.changed_since(0) == (0, [])
    first, second = np.array([5, 130], np.int64), np.array([6, 199], np.int64)
    dist.update_table(client, "t", model, "emb", first, np.ones((2, 4), np.float32))
    d.refresh()
    dist.update_table(client, "t", model, "emb", second, np.full((2, 4), 2, np.float32))
    d.refresh()
    assert remote.refreshes == 2
    assert remote.changed_since(2) == (2, [])
    assert remote.changed_since(1) == (2, _block_rows_of(second, 200))
    # Both refreshes, merged: sorted, each id once (5 and 6 share block 1).
    assert remote.changed_since(0) == (2, _block_rows_of(np.concatenate([first, second]), 200))
    with pytest.raises(ValueError, match=r"remote table 'emb': changed_since\(3\) is outside \[0, 2\] refreshes"):
        remote.changed_since(3)
    with pytest.raises(ValueError, match=r"changed_since\(-1\) is outside"):
        remote.changed_since(-1)
    d.close()


def test_change_log_is_bounded(redis_cluster, seed):
    """Past `rows` logged ids (or 64 refreshes) the oldest refreshes are
    dropped, and a consumer from before them hears "everything changed"."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((16, 2)).astype(np.float32)
    model = f"logbound{seed}"
    _, d = remote_engine(redis_cluster, {"emb": table}, model=model, host_share=0.5)
    remote = d._remote["emb"]
    client = dist.connect(settings(redis_cluster))
    dist.update_table(client, "t", model, "emb", np.array([0, 4]), np.zeros((2, 2), np.float32))  # blocks 0, 1
    d.refresh()
    assert remote.changed_since(0) == (1, list(range(8)))
    dist.update_table(client, "t", model, "emb", np.array([8, 12]), np.zeros((2, 2), np.float32))  # blocks 2, 3
    d.refresh()
    assert remote.changed_since(0) == (2, list(range(16)))  # 16 ids logged: at the bound, still known
    dist.update_table(client, "t", model, "emb", np.array([1]), np.ones((1, 2), np.float32))  # block 0
    d.refresh()
    assert remote.changed_since(0) == (3, None)  # 20 ids > 16 rows: refresh 1 dropped
    assert remote.changed_since(1) == (3, list(range(4)) + list(range(8, 16)))
    assert remote.changed_since(2) == (3, list(range(4)))
    # The count bound: 64 refreshes kept. Switching to the same layout again
    # logs an empty change, which only the count bound can drop.
    layout = dist.resolve_layout(d.client, "t", model, "emb", d.versions()["emb"])
    for _ in range(64):
        remote.update(layout["layers"], layout["block_layer"].tolist(), [])
    assert remote.changed_since(3) == (67, [])
    assert remote.changed_since(2) == (67, None)
    d.close()
