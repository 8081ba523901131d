"""A GPU serving process with a tiered table (rows beyond the host tier read
from the backing tier) writes nothing outside the store: the store's table
file is the backing file (issue 12, item 2)."""

import os
import subprocess
import sys

import numpy as np
import pytest

import tiemb
from tiemb import store as table_store

pytestmark = pytest.mark.gpu

# The child imports the tiemb this process imported (a checkout or an install).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tiemb.__file__)))

_CHILD = r"""
import os, sys
import cupy as cp
import numpy as np
import tiemb
from tiemb import _C

d, tmp = sys.argv[1:3]
e = tiemb.GpuEmbeddingEngine.from_store(d)
g = e.group([tiemb.Slot(0, "sum", "plain")])
rng = np.random.default_rng(0)
for _ in range(5):   # misses, inserts, hits; cold rows come from the table file
    ids = rng.integers(0, 5000, 256).astype(np.int64)
    seg = np.sort(rng.integers(0, 8, 256)).astype(np.int64)
    got = g.lookup([cp.asarray(ids)], segment_ids=[cp.asarray(seg)])[0]   # the device path, as serving runs
    g.synchronize()
    got = cp.asnumpy(got)
    rows = _C.read_table_rows(d + "/t.tiemb", ids.tolist())[3]
    want = np.zeros((seg.max() + 1, rows.shape[1]), np.float32)
    np.add.at(want, seg, rows)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
st = e.stats(0)
assert st["rows_file"] > 0 and st["backing_reads"] > 0, st
assert os.listdir(tmp) == [], os.listdir(tmp)   # also while the engine is alive
print("served")
"""


def test_tiered_gpu_serving_process_writes_nothing_outside_the_store(tmp_path):
    pytest.importorskip("cupy")
    d = str(tmp_path / "store")
    table = np.random.default_rng(1).standard_normal((5000, 16)).astype(np.float32)
    table_store.write_store(d, {"t.tiemb": table}, max_batch_size=8, slot_num=1, max_nnz=256,
                            tiers={"cache_percentage": 0.1, "cpu_cache_percentage": 0.3})
    before = {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in os.listdir(d)}
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", _CHILD, d, str(tmp)], capture_output=True, text=True, env=env,
                          cwd="/", timeout=300)
    assert proc.returncode == 0 and "served" in proc.stdout, proc.stderr[-3000:]
    assert os.listdir(tmp) == []
    assert {f: os.stat(os.path.join(d, f)).st_mtime_ns for f in os.listdir(d)} == before
