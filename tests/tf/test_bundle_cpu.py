"""The bundle end to end on the CPU: export here (TensorFlow), load with
device="cpu" (tiemb's CPU engine + XLA's CPU backend through jax), compare
with TensorFlow on fresh inputs at batch sizes below, at and between the
buckets."""

import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
pytest.importorskip("jax", reason="the bundle runtime needs jax (requirements-test.txt)")

from bundle_models import deepctr, reference, sparse_model  # noqa: E402
from serving import assert_same_outputs, serve_here  # noqa: E402
from tiemb import serving, tf_ops  # noqa: E402
from tiemb.serving import dense  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

BUCKETS = [4, 32]
SIZES = [1, 3, 4, 17, 32]      # below, at, between and at the top of the buckets


def export_and_compare(src, tmp_path, feeds, rng, level=0, baseline=False, rtol=1e-5, **kw):
    bundle = str(tmp_path / "bundle")
    test_data = [feeds(5, rng), feeds(24, rng)]
    meta = serving.export_bundle(src, bundle, batch_sizes=BUCKETS, level=level, test_data=test_data,
                                 baseline=baseline, **kw)
    model = serving.load(bundle, device="cpu")
    batches = [feeds(n, rng) for n in SIZES]
    want = serve_here(src, batches)
    got = [model(b) for b in batches]
    assert_same_outputs(want, got, rtol=rtol, what=os.path.basename(src))
    return meta, bundle, model


@pytest.mark.parametrize("name", ["wide_deep", "dlrm", "deepfm"])
def test_reference_models(name, tmp_path, seed):
    src = str(tmp_path / name)
    _, feeds = reference(name, src, seed % 1000)
    meta, bundle, _ = export_and_compare(src, tmp_path, feeds, np.random.default_rng(seed), baseline=True)
    assert meta["verified"]["checked"] and meta["verified"]["max_rel_diff"] <= 1e-5, meta["verified"]
    assert sum(len(op["slots"]) for op in meta["ops"]) == {"wide_deep": 52, "dlrm": 26, "deepfm": 54}[name]
    for b in BUCKETS:
        text = open(os.path.join(bundle, f"dense_{b}.mlir")).read()
        # Level 0: every dot at full float32 precision (no TF32 on Hopper); weights are arguments.
        assert "stablehlo.dot" in text and dense.dots_not_highest(text) == []
        assert f"tensor<{b}x" in text
    from tiemb.serving import xla

    dots, loose = xla.compiled_dots(xla.Executable(text, xla.device("cpu")).hlo_text())
    assert dots and loose == [], loose
    weights = np.load(os.path.join(bundle, "weights.npz"))
    assert len(weights.files) == len(meta["dense"]["weights"]) > 0
    if name == "deepfm":
        # Feature columns' dense-to-sparse conversion has dynamic shapes: XLA cannot take the whole graph.
        assert "reason" in meta["baseline"] and "XLA cannot compile" in meta["baseline"]["reason"]
    else:
        assert sorted(meta["baseline"]["modules"]) == sorted(str(b) for b in BUCKETS)
        from tiemb.serving import xla

        exe = xla.Executable(open(os.path.join(bundle, "baseline_4.mlir")).read(), xla.device("cpu"))
        base_w = np.load(os.path.join(bundle, "baseline_weights.npz"))
        feeds_4 = reference_batch(feeds, 4, seed)
        out = exe.run([feeds_4[n] for n in meta["baseline"]["inputs"]] +
                      [base_w[k] for k in meta["baseline"]["weights"]])
        want = serve_here(src, [feeds_4])[0]
        np.testing.assert_allclose(np.asarray(out[0]), want[meta["outputs"][0]["name"]], rtol=1e-5, atol=1e-6)


def reference_batch(feeds, n, seed):
    return feeds(n, np.random.default_rng(seed + 1))


def test_level1_reports_difference(tmp_path, seed):
    src = str(tmp_path / "wd")
    _, feeds = reference("wide_deep", src, seed % 1000)
    meta, bundle, _ = export_and_compare(src, tmp_path, feeds, np.random.default_rng(seed), level=1, rtol=3e-2)
    diff = meta["verified"]["max_rel_diff"]
    assert 0 < diff <= 3e-2, meta["verified"]
    assert "bf16" in open(os.path.join(bundle, "dense_4.mlir")).read()
    from tiemb import store as table_store

    assert table_store.read_store(os.path.join(bundle, "store"))["tables"]


def test_already_optimized_model(tmp_path, seed):
    """A SavedModel tiemb optimized: its store is copied, its ops wired."""
    from tiemb.rewrite import rewrite_saved_model

    src = str(tmp_path / "dlrm")
    _, feeds = reference("dlrm", src, seed % 1000)
    rng = np.random.default_rng(seed)
    batches = [feeds(n, rng) for n in (2, 30)]
    # Fused outputs (the default rewrite) and one output per slot both serve.
    for k, fuse in enumerate((True, False)):
        opt = str(tmp_path / f"opt{k}")
        rewrite_saved_model(src, opt, max_batch_size=64, max_nnz=26, fuse_outputs=fuse)
        bundle = str(tmp_path / f"bundle{k}")
        meta = serving.export_bundle(opt, bundle, batch_sizes=BUCKETS, test_data=[feeds(5, rng)], baseline=True)
        assert "already optimized" in meta["baseline"]["reason"]
        assert (len(meta["ops"][0]["outputs"]) < len(meta["ops"][0]["slots"])) == fuse
        assert_same_outputs(serve_here(src, batches), [serving.load(bundle, "cpu")(b) for b in batches], rtol=1e-5)


def test_sparse_tensor_pieces_model(tmp_path, seed):
    """tf.nn.embedding_lookup_sparse over SparseTensor pieces: the bundle takes
    the pieces as feeds (ids and indices unpadded, any length)."""
    src = str(tmp_path / "sparse")
    feeds = sparse_model(src, seed % 1000)
    meta, _, _ = export_and_compare(src, tmp_path, feeds, np.random.default_rng(seed), baseline=True)
    slot = meta["ops"][0]["slots"][0]
    assert slot["mode"] == "plain" and slot["ids"] == {"input": "ids", "kind": "values"}
    assert slot["segment_ids"] == {"input": "indices", "kind": "column", "column": 0}
    assert not meta["inputs"]["ids"]["padded"] and meta["inputs"]["x"]["padded"]
    assert "no batch dimension" in meta["baseline"]["reason"]


@pytest.mark.parametrize("kind", ["deepfm", "wdl"])
def test_deepctr_models(kind, tmp_path, seed):
    pytest.importorskip("deepctr", reason="deepctr is in requirements-test.txt")
    src = str(tmp_path / kind)
    feeds = deepctr(kind, src, seed)
    meta, _, _ = export_and_compare(src, tmp_path, feeds, np.random.default_rng(seed))
    assert sum(len(op["slots"]) for op in meta["ops"]) == {"deepfm": 14, "wdl": 13}[kind]


def test_cli_export(tmp_path, seed):
    from tiemb.cli import main

    src = str(tmp_path / "wd")
    _, feeds = reference("wide_deep", src, seed % 1000)
    bundle = str(tmp_path / "b")
    assert main(["export", src, "--bundle", bundle, "--batch", "2,8", "--param", "tiemb/max_nnz=26"]) == 0
    model = serving.load(bundle, device="cpu")
    assert model.buckets == [2, 8] and model.meta["engine"]["max_nnz"] == 26
    batch = feeds(7, np.random.default_rng(seed))
    assert_same_outputs(serve_here(src, [batch]), [model(batch)], rtol=1e-5)


@pytest.mark.parametrize("name", ["wide_deep", "deepfm", "sparse"])
def test_one_program_per_bucket(name, tmp_path, seed):
    """Each bucket is one XLA program: the lookups as tiemb_lookup custom
    calls feeding the dense module; its lookups alone (floor_args) fed to
    the dense module alone give the same outputs."""
    from tiemb.serving import program, xla

    src = str(tmp_path / name)
    feeds = sparse_model(src, seed % 1000) if name == "sparse" else reference(name, src, seed % 1000)[1]
    rng = np.random.default_rng(seed)
    bundle = str(tmp_path / "bundle")
    meta = serving.export_bundle(src, bundle, batch_sizes=BUCKETS, test_data=[feeds(6, rng), feeds(20, rng)],
                                 verify=False)
    model = serving.load(bundle, device="cpu")
    text = program.compose(open(os.path.join(bundle, "dense_32.mlir")).read(), meta, 32, [7] * len(meta["ops"]))
    assert text.count(f"stablehlo.custom_call @{xla.LOOKUP_TARGET}(") == len(meta["ops"])
    assert "mhlo.backend_config = {handle = 7 : i64}" in text and f"func.call @{program.DENSE}(" in text
    hlo = model._programs[32].hlo_text()
    assert f'custom_call_target="{xla.LOOKUP_TARGET}"' in hlo
    batch = feeds(13, rng)
    whole = model(batch)
    bucket, args = model.floor_args(batch)
    parts = model.dense_only(args, bucket)
    for spec, r in zip(model.outputs, parts):
        np.testing.assert_array_equal(np.asarray(r)[:13], whole[spec["name"]])
    if name == "wide_deep":
        # Fused outputs: W&D's 52 slots write 2 outputs (deep and wide concatenations).
        assert [len(o["outputs"]) for o in meta["ops"]] == [2]
    if name == "deepfm":
        # Feature columns' padded id matrices are pooled slots, read in place (no dense-to-sparse conversion).
        slots = [s for op in meta["ops"] for s in op["slots"]]
        assert any(s["id_width"] >= 0 for s in slots)
        assert all(s["ids"]["kind"] in ("values", "column") for s in slots)
    if name == "sparse":
        assert meta["inputs"]["ids"]["capacity"] and meta["ops"][0]["outputs"][0]["spill"]
