"""One core per process (issue 12, item 1): tiemb._C and the op library load
one libtiemb_core.so, so a store opened by the Python API and by the
TensorFlow op is one engine, and its tables are in memory once."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow")

import tiemb  # noqa: E402

# The child imports the tiemb this process imported (a checkout or an install).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tiemb.__file__)))

# Run in a fresh process, so that the order of the two openings is the test's
# and the resident set is this store's alone.
_CHILD = r"""
import json, sys
import numpy as np
import tensorflow as tf
import tiemb
from tiemb import _C, tf_ops

store, warm, order = sys.argv[1:4]

def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmRSS:"))

def op_lookup(d):
    return tf_ops.lookup(d, [tf.constant([1, 2], tf.int64)], [tf.constant([0, 0], tf.int64)], tables=["t.tiemb"],
                         dims=[128], combiners=["sum"], modes=["plain"])[0].numpy()

op_lookup(warm)  # TensorFlow's own first-call setup, outside the measure
keep, seen = [], {}
rss_before = rss()
for who in order.split(","):
    if who == "python":
        keep.append(_C.CpuEngine.from_store(store))
        seen["python_address"] = keep[-1].address
    else:
        keep.append(op_lookup(store))
    seen["rss_after_" + who] = rss() - rss_before
seen["from_c"] = [e for e in _C.live_store_engines() if e["store"] == store]
seen["from_op"] = [e for e in tf_ops.store_engines() if e["store"] == store]
print(json.dumps(seen))
"""

TABLE_ROWS, TABLE_DIM = 400_000, 128   # 204.8 MB of float32


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    import numpy as np

    from tiemb import tf_ops

    base = tmp_path_factory.mktemp("one_core")
    big = os.path.realpath(str(base / "big"))
    rng = np.random.default_rng(0)
    tf_ops.write_store(big, {"t.tiemb": rng.standard_normal((TABLE_ROWS, TABLE_DIM), dtype=np.float32)},
                       max_batch_size=8, slot_num=1, max_nnz=4)
    warm = str(base / "warm")
    tf_ops.write_store(warm, {"t.tiemb": np.ones((4, TABLE_DIM), np.float32)}, max_batch_size=8, slot_num=1, max_nnz=4)
    return big, warm


@pytest.mark.parametrize("order", ["python,op", "op,python"])
def test_op_and_python_api_share_one_engine(stores, order):
    big, warm = stores
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _CHILD, big, warm, order], capture_output=True, text=True, env=env,
                          cwd="/", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    table_bytes = TABLE_ROWS * TABLE_DIM * 4
    first, second = order.split(",")
    # The registry as each module sees it: the same single engine, used by both.
    assert seen["from_c"] == seen["from_op"], seen
    (entry,) = seen["from_c"]
    assert entry["device"] == -1 and entry["address"] == seen["python_address"]
    assert entry["users"] >= 2, f"the op did not take the Python API's engine (or the reverse): {entry}"
    # Memory: the first opening loads the table, the second adds no copy of it.
    assert seen["rss_after_" + first] > 0.9 * table_bytes, seen
    assert seen["rss_after_" + second] - seen["rss_after_" + first] < 0.25 * table_bytes, seen
