"""What this build contains, and that it says so truthfully."""

import os
import shutil
import subprocess
import sys

import pytest

import tiemb
from tiemb import _C


def test_version_flows_from_python_into_the_extension():
    assert _C.__version__ == tiemb.__version__
    assert tiemb.build_info()["version"] == tiemb.__version__


@pytest.mark.skipif(shutil.which("nvcc") is None and not os.environ.get("CUDACXX"),
                    reason="no nvcc on this machine: the build has no CUDA part by design")
def test_cuda_sources_compiled_where_nvcc_exists():
    info = tiemb.build_info()
    assert info["cuda_compiled"], "nvcc is on PATH but the extension was built without its CUDA part"
    assert info["cuda_runtime_version"] >= 11000
    assert info["cuda_architectures"]


def test_cuda_queries_are_safe_without_a_gpu():
    """The device count agrees with what the driver reports (nvidia-smi where
    it exists, none without the CUDA part), and the queries answer, never
    raise, for devices that do not exist."""
    n = _C.cuda_device_count()
    if not _C.cuda_compiled():
        assert n == 0, "a build without its CUDA part reported CUDA devices"
    elif shutil.which("nvidia-smi") is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        want = sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0
        assert n == want, f"cuda_device_count() = {n}, nvidia-smi -L lists {want}"
    assert tiemb.cuda_available() == (n > 0 and _C.cuda_compiled())
    assert _C.cuda_device_name(n) == "" and _C.cuda_device_name(-1) == ""
    for d in range(n):
        assert _C.cuda_device_name(d), f"device {d} has no name"
    assert _C.cuda_current_device() == (0 if n > 0 else -1)


def test_import_does_not_need_tensorflow():
    code = ("import sys, builtins\n"
            "real = builtins.__import__\n"
            "def guard(name, *a, **k):\n"
            "    if name.split('.')[0] == 'tensorflow':\n"
            "        raise ImportError('tensorflow blocked for this test')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = guard\n"
            "import tiemb, numpy as np\n"
            "e = tiemb.EmbeddingEngine(4, 1, 1)\n"
            "g = e.group([tiemb.Slot(e.add_table(np.ones((3, 2), np.float32)), 'sum')])\n"
            "print(g.lookup([np.array([1])], segment_ids=[np.array([0])])[0].tolist())\n"
            "assert 'tensorflow' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[1.0, 1.0]]"


def test_tf_op_library_built_where_tensorflow_imports():
    import importlib.util

    from tiemb import tf_ops

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow is not installed: the op library is not built by design")
    assert tiemb.build_info()["tf_ops_built"], "TensorFlow imports here but tiemb was built without its op library " \
                                               "(was TensorFlow installed after tiemb? reinstall tiemb)"
    assert tf_ops.available()


def test_op_gpu_kernel_built_where_tensorflow_has_cuda():
    """The TiembLookup GPU kernel is compiled (and registered) where TensorFlow
    was built with CUDA and nvcc exists; it cannot run on a machine without a
    GPU, but its registration can be seen."""
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.framework import kernels

    from tiemb import tf_ops

    tf_ops.load()
    devices = {k.device_type for k in kernels.get_registered_kernels_for_op("TiembLookup").kernel}
    want_gpu = bool(tf.sysconfig.get_build_info().get("is_cuda_build")) and tiemb.build_info()["cuda_compiled"]
    assert tiemb.build_info()["tf_gpu_kernel"] == want_gpu
    assert devices == ({"CPU", "GPU"} if want_gpu else {"CPU"})


def test_rewritten_ops_are_pinned_where_their_slots_can_run(tmp_path):
    """device='cpu' pins every op to the CPU kernel; device='gpu' leaves every
    op to TensorFlow's placement (the GPU kernel): the GPU engine serves gather
    slots and in-place index reads too."""
    tf = pytest.importorskip("tensorflow")
    import numpy as np
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tiemb.rewrite import rewrite_sparse_lookups

    t = tf.Variable(np.ones((10, 4), np.float32))
    sig = [tf.SparseTensorSpec([None, None], tf.int64), tf.TensorSpec([None], tf.int64)]

    def frozen(fn):
        f = tf.function(fn, input_signature=sig)
        return convert_variables_to_constants_v2(f.get_concrete_function()).graph.as_graph_def()

    plain = frozen(lambda sp, d: tf.nn.embedding_lookup_sparse(t, sp, None, combiner="mean"))
    mixed = frozen(lambda sp, d: tf.nn.embedding_lookup_sparse(t, sp, None)[:1] + tf.gather(t, d)[:1])
    for gd, device, want in [(plain, "cpu", "/device:CPU:0"), (plain, "gpu", ""), (mixed, "cpu", "/device:CPU:0"),
                             (mixed, "gpu", "")]:
        new, report = rewrite_sparse_lookups(gd, str(tmp_path / "s"), max_batch_size=8, max_nnz=4, device=device)
        (op,) = [n for n in new.node if n.op == "TiembLookup"]
        assert op.device == want, (device, op.device)
        assert {m for m in op.attr["modes"].list.s} == ({b"plain", b"gather"} if gd is mixed else {b"plain"})


def test_parameter_defaults_agree_between_python_and_cpp():
    """tiemb/* defaults live once per language; the two copies must agree."""
    from tiemb import _C
    from tiemb.config import PARAMETERS

    cpp = _C.tier_defaults()
    assert cpp == {k: PARAMETERS[k][1] for k in cpp}
    assert cpp == {"tiemb/cache_percentage": 0.2, "tiemb/cpu_cache_percentage": 1.0, "tiemb/hit_rate_threshold": 0.95}
    assert tiemb.TierConfig().cache_percentage == 0.2 and PARAMETERS["tiemb/enable_distributed"][1] is False
