"""Two processes updating one table at once lose no update: the table's
`current` key moves by compare-and-set, and the loser of a race layers its
update again over the winner's version. The oracle: every row either process
wrote, read back from the version finally current."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import tiemb._C as C
from tiemb import distributed as dist
from tiemb.distributed.publish import read_blocks

pytestmark = pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")

UPDATES = 15  # per process

# One updater: UPDATES updates of one row each (ids first, first + 1, ...),
# row k of process p filled with 1000 * p + k, all starting at time `start`.
_UPDATER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from tiemb import distributed as dist
    address, model, first, p, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    client = dist.connect(dist.DistributedSettings(address, namespace="cas").validate())
    time.sleep(max(0.0, start - time.time()))
    tries = 0
    for k in range(%d):
        r = dist.update_table(client, "cas", model, "emb", np.array([first + k]), np.full((1, 4), 1000 * p + k, np.float32))
        tries += r["attempts"]
    print(tries)
""" % UPDATES)


def _current_rows(client, model):
    layout = dist.resolve_layout(client, "cas", model, "emb", dist.current_version(client, "cas", model, "emb"))
    blocks = read_blocks(client, layout, range(len(layout["block_layer"])))
    return np.concatenate([blocks[k] for k in range(len(blocks))])


def test_two_concurrent_updaters_lose_nothing(redis_cluster, seed, tmp_path):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((200, 4)).astype(np.float32)
    model = f"cas{seed}"
    client = dist.connect(dist.DistributedSettings(redis_cluster.address, namespace="cas").validate())
    dist.publish_table(client, "cas", model, "emb", table, block_rows=4)
    start = time.time() + 3.0  # both interpreters up by then
    procs = [subprocess.Popen([sys.executable, "-c", _UPDATER, redis_cluster.address, model, str(first), str(p),
                               str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=str(tmp_path))  # not the checkout: its uncompiled tiemb/ would shadow the installed one
             for p, first in ((1, 0), (2, 100))]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    want = table.copy()
    for p, first in ((1, 0), (2, 100)):
        for k in range(UPDATES):
            want[first + k] = 1000 * p + k
    np.testing.assert_array_equal(_current_rows(client, model), want)
    tries = [int(out) for out, _ in outs]
    print(f"attempts per process for {UPDATES} updates: {tries}")


def test_a_lost_race_is_retried_then_reported(redis_cluster, seed, monkeypatch):
    """Deterministic: another update switches `current` between this update's
    write and its switch; it retries over the new version, and with
    attempts=1 it fails naming the table."""
    from tiemb.distributed import publish

    table = np.zeros((16, 2), np.float32)
    model = f"casrace{seed}"
    client = dist.connect(dist.DistributedSettings(redis_cluster.address, namespace="cas").validate())
    dist.publish_table(client, "cas", model, "emb", table, block_rows=4)
    real = publish._write_update
    raced = []

    def racing_write(client_, namespace, model_, name, ids, rows, base):
        out = real(client_, namespace, model_, name, ids, rows, base)
        if not raced:  # the other updater wins the first race
            raced.append(real(client_, namespace, model_, name, np.array([9]), np.full((1, 2), 9, np.float32), base))
            client_.run([["SET", f"cas:{model_}:emb:current", raced[0]["version"]]])
        return out

    monkeypatch.setattr(publish, "_write_update", racing_write)
    r = dist.update_table(client, "cas", model, "emb", np.array([1]), np.ones((1, 2), np.float32))
    assert r["attempts"] == 2 and r["base"] == raced[0]["version"]
    want = table.copy()
    want[1], want[9] = 1, 9
    np.testing.assert_array_equal(_current_rows(client, model), want)
    raced.clear()
    with pytest.raises(dist.DistributedError, match=r"update of 'emb': the current version changed under this "
                                                     r"update 1 times"):
        dist.update_table(client, "cas", model, "emb", np.array([2]), np.ones((1, 2), np.float32), attempts=1)
    np.testing.assert_array_equal(_current_rows(client, model), want)  # the winner's, without row 2
    monkeypatch.undo()
    with pytest.raises(dist.DistributedError, match=r"attempts must be >= 1, got 0"):
        dist.update_table(client, "cas", model, "emb", np.array([2]), np.ones((1, 2), np.float32), attempts=0)
