"""The bundle's call path (what ``model(feeds)`` does besides running the
compiled program): feeds in any numpy layout, the transfer descriptors made
at load and jax's public transfer path both give TensorFlow's outputs; the
errors for bad feeds still name the feed and the value; the command-buffer
option is refused where it cannot apply."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("jax", reason="the bundle runtime needs jax (requirements-test.txt)")

from bundle_models import reference  # noqa: E402
from serving import assert_same_outputs, serve_here  # noqa: E402
from tiemb import serving, tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

BUCKETS = [4, 32]
# Below, at, between and at the top of the buckets, then smaller again: the
# pad rows of a shorter request must not keep a longer one's data.
SIZES = [1, 3, 4, 17, 32, 2, 17]


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("callpath")
    src = str(tmp / "wd")
    _, feeds = reference("wide_deep", src, 11)
    bundle = str(tmp / "bundle")
    serving.export_bundle(src, bundle, batch_sizes=BUCKETS, test_data=[feeds(5, np.random.default_rng(0))],
                          baseline=True)
    return src, bundle, feeds


def layouts(feeds):
    """The same feeds as C-contiguous, Fortran-ordered and strided (every other row of a larger array) arrays."""
    fortran = {k: np.asfortranarray(v) for k, v in feeds.items()}
    strided = {}
    for k, v in feeds.items():
        big = np.empty((2 * v.shape[0],) + v.shape[1:], v.dtype)
        big[::2] = v
        big[1::2] = v[::-1] if v.shape[0] else v
        strided[k] = big[::2]
    assert strided["cat"].shape[0] < 2 or not strided["cat"].flags.c_contiguous
    return [feeds, fortran, strided]


def test_feeds_in_any_layout_match_tensorflow(wd, seed):
    src, bundle, feeds = wd
    model = serving.load(bundle, device="cpu")
    rng = np.random.default_rng(seed)
    batches = [feeds(n, rng) for n in SIZES]
    want = serve_here(src, batches)
    for k, layout in enumerate(zip(*[layouts(b) for b in batches])):
        got = [model(b) for b in layout]
        assert_same_outputs(want, got, rtol=1e-5, what=f"layout {k}")
        assert all(g["prob"].shape[0] == len(b["cat"]) for g, b in zip(got, layout))


def test_public_transfer_path_gives_the_same_outputs(wd, seed, monkeypatch):
    """Where jax's internal batched transfer is not there (another jax), the
    feeder falls back to jax.device_put: same outputs."""
    src, bundle, feeds = wd
    model = serving.load(bundle, device="cpu")
    assert all(f._fast is not None for f in model._feeders.values()), "this jax should take the fast path"
    for f in model._feeders.values():
        monkeypatch.setattr(f, "_fast", None)
    rng = np.random.default_rng(seed)
    batches = [feeds(n, rng) for n in (3, 32)]
    assert_same_outputs(serve_here(src, batches), [model(b) for b in batches], rtol=1e-5)


class Foreign:
    """An array that is not numpy (as a cupy array is not): the DLPack
    protocol, dtype, shape, and ``__array__`` for the padding."""

    def __init__(self, a):
        self._a, self.dtype, self.shape, self.ndim = a, a.dtype, a.shape, a.ndim

    def __dlpack__(self, **kw):
        return self._a.__dlpack__(**kw)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()

    def __array__(self, dtype=None, copy=None):
        return self._a


@pytest.mark.parametrize("public", [False, True], ids=["lean import", "jax.dlpack.from_dlpack"])
def test_dlpack_feeds_match_tensorflow(wd, seed, monkeypatch, public):
    """Feeds that are not numpy are taken over with DLPack (padded ones
    after padding): TensorFlow's outputs, through the lean import and
    through jax's public from_dlpack (where jax's internals differ)."""
    src, bundle, feeds = wd
    model = serving.load(bundle, device="cpu")
    assert model._device_feeder._import is not None, "this jax should take the lean DLPack import"
    if public:
        monkeypatch.setattr(model._device_feeder, "_import", None)
    rng = np.random.default_rng(seed)
    batches = [feeds(n, rng) for n in (4, 3, 32, 17)]
    got = [model({k: Foreign(v) for k, v in b.items()}) for b in batches]
    assert_same_outputs(serve_here(src, batches), got, rtol=1e-5)
    with pytest.raises(ValueError, match="input 'cat' must be int64, got int32"):
        model({k: Foreign(v.astype(np.int32) if k == "cat" else v) for k, v in batches[0].items()})


def test_program_args_and_run_program_match_the_call(wd, seed):
    _, bundle, feeds = wd
    model = serving.load(bundle, device="cpu")
    batch = feeds(9, np.random.default_rng(seed))
    bucket, args = model.program_args(batch)
    assert bucket == 32 and len(args) == len(model._program_inputs) + len(model.meta["dense"]["weights"])
    whole = model(batch)
    part = model.run_program(bucket, args)
    np.testing.assert_array_equal(np.asarray(part[0])[:9], whole["prob"])


def test_bad_feeds_still_name_the_feed_and_value(wd):
    _, bundle, feeds = wd
    model = serving.load(bundle, device="cpu")
    good = feeds(3, np.random.default_rng(1))
    with pytest.raises(ValueError, match="feeds must be a dict of input name -> array, got list"):
        model([good["dense"], good["cat"]])
    with pytest.raises(ValueError, match="input 'cat' must be int64, got object"):
        model(dict(good, cat=good["cat"].tolist()))
    with pytest.raises(ValueError, match="input 'dense' must be float32, got float64"):
        model(dict(good, dense=good["dense"].astype(np.float64)))
    with pytest.raises(ValueError, match=r"input 'cat' must have shape \[-1, 26\] \(-1 = any\), got \(3, 25\)"):
        model(dict(good, cat=good["cat"][:, :25]))
    with pytest.raises(ValueError, match=r"input 'cat' must have 2 dimensions .* got shape \(3,\)"):
        model(dict(good, cat=good["cat"][:, 0]))
    with pytest.raises(ValueError, match=r"input 'cat' must have 2 dimensions .* got shape \(\)"):
        model(dict(good, cat=np.int64(3)))
    with pytest.raises(ValueError, match=r"input 'dense' must have 2 dimensions .* got shape \(3, 13, 1\)"):
        model(dict(good, dense=good["dense"][:, :, None]))
    with pytest.raises(ValueError, match="input 'dense': batch must be at least 1, got 0"):
        model({k: v[:0] for k, v in good.items()})
    with pytest.raises(ValueError, match="input 'dense': batch 33 is above the largest bucket 32"):
        model(feeds(33, np.random.default_rng(2)))
    with pytest.raises(ValueError, match="missing feed for input 'cat'"):
        model({"dense": good["dense"]})
    with pytest.raises(ValueError, match="unknown input 'Cat'"):
        model(dict(good, Cat=good["cat"]))
    # Still serving after the errors, with TensorFlow's shapes.
    assert model(good)["prob"].shape == (3, 1)


def test_command_buffer_is_a_gpu_option(wd):
    from tiemb.serving import program, xla

    _, bundle, _ = wd
    with pytest.raises(ValueError, match=r"command_buffer=True needs device='gpu' .* got device='cpu'"):
        serving.load(bundle, device="cpu", command_buffer=True)
    model = serving.load(bundle, device="cpu")
    assert not model.command_buffer
    assert model._plans[0].capture_blocker == "XLA's CPU backend has no command buffers"
    # The program names the command-buffer target when asked (the GPU tests run it).
    text = open(f"{bundle}/dense_4.mlir").read()
    composed = program.compose(text, model.meta, 4, [5], target=xla.LOOKUP_TARGET_CMDBUF)
    assert f"custom_call @{xla.LOOKUP_TARGET_CMDBUF}(" in composed
    assert f"custom_call @{xla.LOOKUP_TARGET}(" not in composed
    with pytest.raises(ValueError, match="command_buffer=True needs kind 'gpu', got 'cpu'"):
        xla.register_lookup_target("cpu", command_buffer=True)


def test_baseline_takes_feeds_the_same_way(wd, seed):
    """The original whole graph (benchmarks' baseline) is fed through the same
    handover as the bundle: numpy and DLPack feeds give TensorFlow's outputs."""
    from tiemb.serving.runtime import Baseline

    src, bundle, feeds = wd
    base = Baseline(bundle, device="cpu")
    rng = np.random.default_rng(seed)
    batches = [feeds(n, rng) for n in BUCKETS]
    want = serve_here(src, batches)
    for wrap in (lambda a: a, Foreign):
        got = [{"prob": np.asarray(base({k: wrap(v) for k, v in b.items()})[0])} for b in batches]
        assert_same_outputs(want, got, rtol=1e-5)
    with pytest.raises(ValueError, match=r"the baseline is compiled for batches \[4, 32\], got 3"):
        base(feeds(3, rng))
