"""The op's statuses by cause (issue 12, item 4): bad input is
InvalidArgument; running out of memory is ResourceExhausted, not a complaint
about the input."""

import os
import subprocess
import sys

import numpy as np
import pytest

import tiemb

tf = pytest.importorskip("tensorflow")

from tiemb import tf_ops  # noqa: E402

# The child imports the tiemb this process imported (a checkout or an install).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tiemb.__file__)))

# The op builds its workspace from the store's sizes on first use: with
# max_batch_size = 2^31 that is 16 GB of row offsets. Under an address-space
# limit a little above what the process holds, the allocation fails at once
# (no page is touched) and the op must say ResourceExhausted.
_CHILD = r"""
import resource, sys
import tensorflow as tf
from tiemb import tf_ops

store, warm = sys.argv[1:3]

def lookup(d):
    return tf_ops.lookup(d, [tf.constant([1], tf.int64)], [tf.constant([0], tf.int64)], tables=["t.tiemb"], dims=[4],
                         combiners=["sum"], modes=["plain"])[0]

lookup(warm)  # TensorFlow's own first-call setup under no limit
with open("/proc/self/status") as f:
    vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.RLIM_INFINITY))
try:
    lookup(store)
except tf.errors.ResourceExhaustedError as e:
    print("ResourceExhausted:", e.message)
except tf.errors.OpError as e:
    print(type(e).__name__ + ":", e.message)
"""


def test_out_of_memory_is_resource_exhausted_and_bad_input_invalid_argument(tmp_path):
    table = np.ones((8, 4), np.float32)
    huge, warm = str(tmp_path / "huge"), str(tmp_path / "warm")
    tf_ops.write_store(huge, {"t.tiemb": table}, max_batch_size=2**31, slot_num=1, max_nnz=1)
    tf_ops.write_store(warm, {"t.tiemb": table}, max_batch_size=8, slot_num=1, max_nnz=1)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _CHILD, huge, warm], capture_output=True, text=True, env=env,
                          cwd="/", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ResourceExhausted:") and "TiembLookup: out of host memory" in last, proc.stdout
    # The same op on bad input: InvalidArgument naming the slot and the id.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"slot 0: ids\[0\] = 9 is out of range"):
        tf_ops.lookup(warm, [tf.constant([9], tf.int64)], [tf.constant([0], tf.int64)], tables=["t.tiemb"], dims=[4],
                      combiners=["sum"], modes=["plain"])
