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


def _resized(feeds, inputs, batch):
    """The feeds' rows repeated to ``batch`` rows; None for SparseTensor-piece feeds."""
    if not all(inputs[k]["padded"] for k in feeds):
        return None
    return {k: np.resize(v, (batch,) + v.shape[1:]) for k, v in feeds.items()}


@pytest.mark.skipif(not BUNDLES, reason=f"no exported bundles under {ROOT}")
@pytest.mark.parametrize("bundle", BUNDLES, ids=[os.path.basename(b) for b in BUNDLES])
def test_command_buffer_handler_matches_the_default_one(bundle):
    """Every bundle both ways: with command_buffer=True (the handler XLA may
    trace into the program's CUDA graph, replayed on later calls) the outputs
    are the default handler's, for numpy and cupy feeds, at every bucket and
    between buckets, called repeatedly; bundles with tiered tables are
    refused, naming the slot."""
    pytest.importorskip("jax")
    cp = pytest.importorskip("cupy")
    from tiemb import serving
    from tiemb.serving import xla

    model = serving.load(bundle, device="gpu")
    blockers = [p.capture_blocker for p in model._plans if p.capture_blocker]
    if blockers:
        with pytest.raises(ValueError, match=r"command_buffer=True: slot '.*' \(op .*\): table \d+ is tiered"):
            serving.load(bundle, device="gpu", command_buffer=True)
        return
    cb = serving.load(bundle, device="gpu", command_buffer=True)
    assert cb.command_buffer and f'custom_call_target="{xla.LOOKUP_TARGET_CMDBUF}"' in \
        cb._programs[cb.buckets[0]].hlo_text()
    level = model.meta["level"]
    batches = [feeds for feeds, _ in model.test_batches()]
    for b in model.buckets + [max(1, model.buckets[-1] - 3)]:
        resized = _resized(batches[0], model.inputs, b)
        if resized is not None:
            batches.append(resized)
    # The dense part is compiled twice (its GEMM algorithms may differ): the
    # outputs agree within the level's tolerance, the lookups exactly.
    for feeds in batches:
        want = model(feeds)
        dev = {k: cp.asarray(v) for k, v in feeds.items()}
        for _ in range(3):                                   # recorded, then replayed
            got = cb(feeds)
            assert max_rel(want, got) <= TOLERANCE[level], (bundle, max_rel(want, got))
            got_dev = cb(dev)
            cb.synchronize()
            assert max_rel(want, {k: cp.asnumpy(v) for k, v in got_dev.items()}) <= TOLERANCE[level]
        n_dense = len(model.meta["dense"]["inputs"])
        _, plain = model.floor_args(dev)
        _, captured = cb.floor_args(dev)
        cb.synchronize()
        for k, (a, b) in enumerate(zip(plain[n_dense:], captured[n_dense:])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{bundle}: lookup output {k}")
    for feeds, want in model.test_batches():
        assert max_rel(want, cb(feeds)) <= TOLERANCE[level]


@pytest.mark.skipif(not BUNDLES, reason=f"no exported bundles under {ROOT}")
def test_command_buffer_reports_a_bad_id_of_a_captured_call():
    """A bad id in a call the graph replays: the kernels latch it, the runtime
    reports it (naming the input and the value) at synchronize, or at the next
    call; once reported, good calls serve again; numpy feeds raise at once."""
    pytest.importorskip("jax")
    cp = pytest.importorskip("cupy")
    from tiemb import serving

    for bundle in BUNDLES:
        model = serving.load(bundle, device="gpu")
        feeds, _ = model.test_batches()[0]
        slot = next((s for op in model.meta["ops"] for s in op["slots"] if s["mode"] == "gather"), None)
        if slot is None or feeds[slot["ids"]["input"]].ndim != 2 or any(p.capture_blocker for p in model._plans):
            continue
        cb = serving.load(bundle, device="gpu", command_buffer=True)
        name, bad_id = slot["ids"]["input"], slot["rows"] + 7
        bad = {k: v.copy() for k, v in feeds.items()}
        bad[name][0, max(slot["id_column"], 0)] = bad_id
        dev, bad_dev = ({k: cp.asarray(v) for k, v in f.items()} for f in (feeds, bad))
        want = model(feeds)
        tol = TOLERANCE[model.meta["level"]]
        for _ in range(3):
            cb(dev)
        cb.synchronize()
        cb(bad_dev)
        with pytest.raises(ValueError, match=f"input '{name}'.*{bad_id}"):
            cb.synchronize()
        assert max_rel(want, {k: cp.asnumpy(v) for k, v in cb(dev).items()}) <= tol
        cb.synchronize()
        cb(bad_dev)
        cp.cuda.runtime.deviceSynchronize()      # the bad call has finished: its error is on the latch
        with pytest.raises(ValueError, match=f"input '{name}'.*{bad_id}"):
            cb(dev)
        with pytest.raises(ValueError, match=f"input '{name}'.*{bad_id}"):
            cb(bad)
        assert max_rel(want, cb(feeds)) <= tol
        return
    pytest.skip("no bundle with a resident gather slot over an id matrix")
