"""Bundles exported on a machine with TensorFlow (benchmarks/export_bundles.py,
into benchmarks/bundles/ or $TIEMB_BUNDLES), served on the GPU: outputs
against TensorFlow's CPU outputs recorded in each bundle."""

import glob
import os

import numpy as np
import pytest

pytestmark = pytest.mark.gpu

ROOT = os.environ.get("TIEMB_BUNDLES") or os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "bundles")
BUNDLES = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(ROOT, "*", "bundle.json")))
TOLERANCE = {0: 1e-5, 1: 3e-2}


def max_rel(want, got):
    from tiemb.backends import relative_difference

    return relative_difference(want, got)[1]


@pytest.mark.skipif(not BUNDLES, reason=f"no exported bundles under {ROOT} (benchmarks/export_bundles.py)")
@pytest.mark.parametrize("bundle", BUNDLES, ids=[os.path.basename(b) for b in BUNDLES])
def test_bundle_on_gpu_matches_tensorflow(bundle):
    pytest.importorskip("jax")
    cp = pytest.importorskip("cupy")
    from tiemb import serving

    model = serving.load(bundle, device="gpu")
    level = model.meta["level"]
    for feeds, want in model.test_batches():
        got = model(feeds)                                   # numpy in: numpy out
        assert all(isinstance(v, np.ndarray) for v in got.values())
        assert max_rel(want, got) <= TOLERANCE[level], (bundle, max_rel(want, got))
        dev = model({k: cp.asarray(v) for k, v in feeds.items()})   # device in: cupy out, no wait
        model.synchronize()
        assert all(isinstance(v, cp.ndarray) for v in dev.values())
        assert max_rel(want, {k: cp.asnumpy(v) for k, v in dev.items()}) <= TOLERANCE[level]


@pytest.mark.skipif(not BUNDLES, reason=f"no exported bundles under {ROOT}")
def test_level0_modules_compile_without_tf32():
    """Level 0 on Hopper: the compiled dense module keeps full float32 dots."""
    pytest.importorskip("jax")
    from tiemb.serving import dense, xla

    level0 = [b for b in BUNDLES if '"level": 0' in open(os.path.join(b, "bundle.json")).read()]
    if not level0:
        pytest.skip("no level-0 bundle")
    text = open(sorted(glob.glob(os.path.join(level0[0], "dense_*.mlir")))[0]).read()
    assert dense.dots_not_highest(text) == []
    hlo = xla.Executable(text, xla.device("gpu")).hlo_text()
    dots, loose = xla.compiled_dots(hlo)
    assert dots, "no dot or GEMM found in the compiled module:\n" + "\n".join(
        ln for ln in hlo.splitlines() if "fusion" in ln or "custom-call" in ln)[:3000]
    assert loose == [], loose


@pytest.mark.skipif(not BUNDLES, reason=f"no exported bundles under {ROOT}")
def test_gpu_bad_feeds_name_the_input():
    pytest.importorskip("jax")
    pytest.importorskip("cupy")
    from tiemb import serving

    model = serving.load(BUNDLES[0], device="gpu")
    feeds, _ = model.test_batches()[0]
    name = sorted(feeds)[0]
    with pytest.raises(ValueError, match=f"missing feed for input '{name}'"):
        model({k: v for k, v in feeds.items() if k != name})
    with pytest.raises(ValueError, match=f"input '{name}' must be"):
        model(dict(feeds, **{name: feeds[name].astype(np.float64)}))


@pytest.mark.skipif(not BUNDLES, reason=f"no exported bundles under {ROOT}")
def test_gpu_program_is_one_executable_with_the_lookup_call():
    """The GPU handler is built and the bucket's program runs the lookups as
    its custom call: floor_args (the lookups alone) fed to the dense module
    alone give the whole call's outputs."""
    pytest.importorskip("jax")
    cp = pytest.importorskip("cupy")
    from tiemb import _C, serving
    from tiemb.serving import xla

    assert "gpu" in _C.xla_ffi_targets(), "this build has no GPU FFI handler (TIEMB_CUDA=ON with jax installed)"
    model = serving.load(BUNDLES[0], device="gpu")
    feeds, _ = model.test_batches()[0]
    dev = {k: cp.asarray(v) for k, v in feeds.items()}
    whole = model(dev)
    bucket, args = model.floor_args(dev)
    assert xla.LOOKUP_TARGET in model._programs[bucket].hlo_text()
    parts = model.dense_only(args, bucket)
    n = next(iter(whole.values())).shape[0]
    for spec, r in zip(model.outputs, parts):
        np.testing.assert_allclose(cp.asnumpy(cp.from_dlpack(r))[:n], cp.asnumpy(whole[spec["name"]]),
                                   rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not BUNDLES, reason=f"no exported bundles under {ROOT}")
def test_gpu_id_out_of_range_names_the_slot():
    """A data error the GPU finds surfaces at synchronize (device feeds) or at once (numpy feeds), naming the slot."""
    pytest.importorskip("jax")
    cp = pytest.importorskip("cupy")
    from tiemb import serving

    for bundle in BUNDLES:
        model = serving.load(bundle, device="gpu")
        feeds, _ = model.test_batches()[0]
        slot = next((s for op in model.meta["ops"] for s in op["slots"] if s["mode"] == "gather"), None)
        if slot is None or feeds[slot["ids"]["input"]].ndim != 2:
            continue
        bad = {k: v.copy() for k, v in feeds.items()}
        column = max(slot["id_column"], 0)
        bad[slot["ids"]["input"]][0, column] = slot["rows"] + 7
        with pytest.raises(ValueError, match=f"input '{slot['ids']['input']}'.*{slot['rows'] + 7}"):
            model(bad)
        model({k: cp.asarray(v) for k, v in bad.items()})
        with pytest.raises(ValueError, match=f"input '{slot['ids']['input']}'"):
            model.synchronize()
        return
    pytest.skip("no bundle with a gather slot over an id matrix")
