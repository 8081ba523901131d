"""The XLA FFI lookup handlers (python/xla_ffi.cpp) are built where jax was
importable at build time, and the extension says which it has."""

import importlib.util

import pytest

from tiemb import _C


def test_ffi_handlers_built_where_jax_imports():
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed: the handlers are not built by design (serving.load says how to build)")
    assert hasattr(_C, "xla_ffi_targets"), ("jax imports here but tiemb was built without its XLA FFI handlers "
                                            "(was jax installed after tiemb? reinstall tiemb)")
    targets = _C.xla_ffi_targets()
    assert "cpu" in targets
    # The GPU handler comes with the CUDA part.
    assert ("gpu" in targets) == bool(_C.cuda_compiled())
    assert all(type(c).__name__ == "PyCapsule" for c in targets.values())


def test_handlers_register_with_jax():
    pytest.importorskip("jax")
    if not hasattr(_C, "xla_ffi_targets"):
        pytest.skip("this build has no XLA FFI handlers")
    from tiemb.serving import xla

    xla.register_lookup_target("cpu")
    xla.register_lookup_target("cpu")        # once per process: a second call is a no-op
    assert "cpu" in xla._registered
