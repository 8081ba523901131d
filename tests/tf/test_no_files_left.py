"""A serving process writes nothing outside the store, and nothing into it
(issue 12, item 2): TMPDIR stays empty, the store's files stay as written."""

import os
import subprocess
import sys

import numpy as np
import pytest

import tiemb

pytest.importorskip("tensorflow")

from tiemb import store as table_store  # noqa: E402

# The child imports the tiemb this process imported (a checkout or an install).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tiemb.__file__)))

_CHILD = r"""
import sys
import numpy as np
import tensorflow as tf
from tiemb import _C, tf_ops

d = sys.argv[1]
got = tf_ops.lookup(d, [tf.constant([1, 5, 7], tf.int64)], [tf.constant([0, 0, 1], tf.int64)], tables=["t.tiemb"],
                    dims=[8], combiners=["sum"], modes=["plain"])[0].numpy()
rows = _C.read_table_rows(d + "/t.tiemb", [1, 5, 7])[3]
np.testing.assert_allclose(got, [rows[0] + rows[1], rows[2]], rtol=1e-6)
engine = _C.CpuEngine.from_store(d)
print("served")
"""


def _snapshot(d):
    return {f: (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns) for f in os.listdir(d)}


def test_cpu_serving_process_leaves_tmpdir_empty_and_the_store_unchanged(tmp_path):
    d = str(tmp_path / "store")
    table_store.write_store(d, {"t.tiemb": np.random.default_rng(0).standard_normal((100, 8)).astype(np.float32)},
                            max_batch_size=8, slot_num=1, max_nnz=4,
                            tiers={"cache_percentage": 0.25, "cpu_cache_percentage": 0.5})
    before = _snapshot(d)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _CHILD, d], capture_output=True, text=True, env=env, cwd="/",
                          timeout=300)
    assert proc.returncode == 0 and "served" in proc.stdout, proc.stderr[-3000:]
    assert os.listdir(tmp) == []
    assert _snapshot(d) == before
