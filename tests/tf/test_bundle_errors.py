"""Bad feeds and bad bundles: errors that name the input, slot or file."""

import json
import os
import shutil

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("jax", reason="the bundle runtime needs jax (requirements-test.txt)")

from bundle_models import VOCAB, reference, sparse_model  # noqa: E402
from tiemb import serving, tf_ops  # noqa: E402
from tiemb.serving import BundleError  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


@pytest.fixture(scope="module")
def wd_bundle(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bundle")
    src = str(tmp / "wd")
    _, feeds = reference("wide_deep", src, 7)
    bundle = str(tmp / "bundle")
    serving.export_bundle(src, bundle, batch_sizes=[2, 8], test_data=[feeds(5, np.random.default_rng(0))])
    return bundle, feeds


def test_feeds(wd_bundle):
    bundle, feeds = wd_bundle
    model = serving.load(bundle, device="cpu")
    good = feeds(3, np.random.default_rng(1))
    assert model(good)["prob"].shape == (3, 1)
    with pytest.raises(ValueError, match="missing feed for input 'dense'"):
        model({"cat": good["cat"]})
    with pytest.raises(ValueError, match="unknown input 'extra'"):
        model(dict(good, extra=good["dense"]))
    with pytest.raises(ValueError, match="input 'cat' must be int64, got int32"):
        model(dict(good, cat=good["cat"].astype(np.int32)))
    with pytest.raises(ValueError, match=r"input 'dense' must have shape \[-1, 13\]"):
        model(dict(good, dense=good["dense"][:, :5]))
    with pytest.raises(ValueError, match="input 'dense' has batch 2 but input 'cat' has 3"):
        model(dict(good, dense=good["dense"][:2]))
    big = feeds(9, np.random.default_rng(2))
    with pytest.raises(ValueError, match="batch 9 is above the largest bucket 8"):
        model(big)


def test_ids_out_of_range_name_the_slot(wd_bundle):
    bundle, feeds = wd_bundle
    model = serving.load(bundle, device="cpu")
    bad = feeds(4, np.random.default_rng(3))
    bad["cat"][1, 2] = VOCAB[2] + 5
    with pytest.raises(ValueError, match=r"slot '.*' \(op tiemb/lookup_0 slot \d+, input 'cat'\).*"
                                         rf"{VOCAB[2] + 5}"):
        model(bad)
    # Keras wraps -1 to the last row; below -rows it fails, as in TensorFlow.
    bad["cat"][1, 2] = -VOCAB[2] - 1
    with pytest.raises(ValueError, match="input 'cat'"):
        model(bad)


def test_sparse_model_bad_pieces(tmp_path):
    src = str(tmp_path / "sparse")
    feeds = sparse_model(src, 3)
    rng = np.random.default_rng(4)
    bundle = str(tmp_path / "bundle")
    serving.export_bundle(src, bundle, batch_sizes=[4, 16], test_data=[feeds(6, rng), feeds(11, rng)])
    model = serving.load(bundle, device="cpu")
    good = feeds(5, rng)
    bad = dict(good, ids=good["ids"][:-1])
    with pytest.raises(ValueError, match=r"input 'ids'.*segment_ids has \d+ entries but ids has \d+"):
        model(bad)
    bad = dict(good, ids=good["ids"].copy())
    bad["ids"][0] = 10_000
    with pytest.raises(ValueError, match="input 'ids'.*10000"):
        model(bad)


def copy_of(bundle, tmp_path):
    dst = str(tmp_path / "copy")
    shutil.copytree(bundle, dst)
    return dst


def test_corrupt_bundles(wd_bundle, tmp_path):
    bundle, _ = wd_bundle
    with pytest.raises(BundleError, match="has no bundle.json"):
        serving.load(str(tmp_path), device="cpu")
    with pytest.raises(BundleError, match="is not a directory"):
        serving.load(str(tmp_path / "nothing"), device="cpu")

    b = copy_of(bundle, tmp_path)
    meta_path = os.path.join(b, "bundle.json")
    meta = json.load(open(meta_path))
    json.dump(dict(meta, format_version=99), open(meta_path, "w"))
    with pytest.raises(BundleError, match="format version 99; this tiemb reads version 2 only"):
        serving.load(b, device="cpu")
    # A bundle of format 1 (one output per slot, lookups in Python): export again.
    json.dump(dict(meta, format_version=1), open(meta_path, "w"))
    with pytest.raises(BundleError, match="format version 1; .*export the model again"):
        serving.load(b, device="cpu")
    open(meta_path, "w").write("{not json")
    with pytest.raises(BundleError, match="bundle.json is corrupt"):
        serving.load(b, device="cpu")
    json.dump(meta, open(meta_path, "w"))
    os.remove(os.path.join(b, "dense_8.mlir"))
    with pytest.raises(BundleError, match="incomplete: missing dense_8.mlir"):
        serving.load(b, device="cpu")
    open(os.path.join(b, "dense_8.mlir"), "w").write("module { garbage")
    with pytest.raises(BundleError, match="dense_8.mlir does not compile"):
        serving.load(b, device="cpu")
    shutil.copy(os.path.join(bundle, "dense_8.mlir"), os.path.join(b, "dense_8.mlir"))
    open(os.path.join(b, "weights.npz"), "wb").write(b"PK\x03\x04 truncated")
    with pytest.raises(BundleError, match="weights.npz is corrupt"):
        serving.load(b, device="cpu")
    shutil.copy(os.path.join(bundle, "weights.npz"), os.path.join(b, "weights.npz"))
    table = meta["ops"][0]["slots"][0]["table"]
    os.remove(os.path.join(b, "store", table))
    with pytest.raises(BundleError, match=f"missing store/{table}"):
        serving.load(b, device="cpu")


def test_bad_device(wd_bundle):
    with pytest.raises(ValueError, match="device must be one of"):
        serving.load(wd_bundle[0], device="tpu")


def test_without_ffi_handlers_load_says_how_to_build(wd_bundle, monkeypatch):
    """No silent fallback: a tiemb built without its XLA FFI handlers cannot serve a bundle and says why."""
    from tiemb import _C
    from tiemb.serving import xla

    monkeypatch.delattr(_C, "xla_ffi_targets", raising=False)
    monkeypatch.setattr(xla, "_registered", set())
    with pytest.raises(RuntimeError, match="built without its XLA FFI lookup handlers.*pip install"):
        serving.load(wd_bundle[0], device="cpu")


def test_sparse_pieces_beyond_capacity_and_batch(tmp_path):
    src = str(tmp_path / "sparse")
    feeds = sparse_model(src, 5)
    rng = np.random.default_rng(6)
    bundle = str(tmp_path / "bundle")
    meta = serving.export_bundle(src, bundle, batch_sizes=[4, 16], test_data=[feeds(6, rng), feeds(11, rng)])
    model = serving.load(bundle, device="cpu")
    cap = 4 * meta["engine"]["max_nnz"]
    good = feeds(3, rng)
    many = dict(good, ids=np.zeros(cap + 1, np.int64),
                indices=np.stack([np.repeat(np.arange(3), cap), np.tile(np.arange(cap), 3)], 1)[:cap + 1])
    with pytest.raises(ValueError, match=f"input 'ids' has {cap + 1} entries, more than the {cap}"):
        model(many)
    beyond = dict(good, indices=good["indices"].copy())
    beyond["indices"][-1, 0] = 3             # dense_shape says 3 rows
    with pytest.raises(ValueError, match="input 'ids'.*segment ids reach row 3, beyond the batch of 3"):
        model(beyond)
    negative = dict(good, ids=good["ids"].copy())
    negative["ids"][1] = -2                  # embedding_lookup_sparse refuses it; so does the bundle
    with pytest.raises(ValueError, match=r"input 'ids'.*id -2 at position 1 is out of range"):
        model(negative)
