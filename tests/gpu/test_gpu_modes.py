"""The GPU engine serves every input form the CPU engine does: gather slots
(Keras Embedding / tf.gather, ids of any shape, Keras' negative-id wrapping),
one column of an id matrix read in place, sp_ids.indices read in place, and a
dense id matrix padded with -1 (safe mode), resident and tiered, and in a
CUDA graph where resident. References: the CPU engine (itself checked
against TensorFlow) and NumPy."""

import numpy as np
import pytest

import tiemb

pytestmark = pytest.mark.gpu

TIERS = {"resident": None, "tiered": tiemb.TierConfig(cache_percentage=0.1), "tiered-sync": tiemb.TierConfig(
    cache_percentage=0.1, hit_rate_threshold=1.0), "tiered-lists": tiemb.TierConfig(cache_percentage=0.1),
    "tiered-lane": tiemb.TierConfig(cache_percentage=0.1)}
# The variant environment of the tiers above that need one.
TIER_ENV = {"tiered-lists": {"TIEMB_TIERED_PROBE": "list", "TIEMB_TIERED_HOST_READS": "list"},
            "tiered-lane": {"TIEMB_TIERED_PROBE": "lane", "TIEMB_TIERED_HOST_READS": "list"}}


@pytest.fixture(autouse=True)
def listed_variants(request, monkeypatch):
    """tiers "tiered-lists" and "tiered-lane": the listed probe or the lane probe, with listed host reads
    (issue 15, tests/gpu/tiered_variants.py), whose dedup and probe see every input form here (wrapped
    negatives, strided columns, -1 padding)."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:
        for k, v in TIER_ENV.get(callspec.params.get("tiers"), {}).items():
            monkeypatch.setenv(k, v)


def cupy():
    return pytest.importorskip("cupy")


def engines(tables, tiers, max_batch=64, max_nnz=8, features=4):
    cpu = tiemb.EmbeddingEngine(max_batch, features, max_nnz)
    gpu = tiemb.GpuEmbeddingEngine(max_batch, features, max_nnz)
    return cpu, gpu, [cpu.add_table(t) for t in tables], [gpu.add_table(t, tiers) for t in tables]


@pytest.mark.parametrize("tiers", list(TIERS), ids=list(TIERS))
@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("table_dtype", [np.float32, np.float16])
def test_gather_slots_equal_the_cpu_engine(tiers, id_dtype, table_dtype, seed):
    cp = cupy()
    rng = np.random.default_rng(seed)
    tables = [rng.standard_normal((v, d)).astype(table_dtype) for v, d in ((500, 16), (7, 3), (3000, 8))]
    cpu, gpu, tc, tg = engines(tables, TIERS[tiers])
    slots = lambda t: [tiemb.Slot(t[0], mode="gather"), tiemb.Slot(t[1], mode="gather", wrap_negative=True),
                       tiemb.Slot(t[2], mode="gather"), tiemb.Slot(t[0], "mean", mode="safe")]
    gc, gg = cpu.group(slots(tc)), gpu.group(slots(tg))
    for _ in range(3):            # tiered: misses first, then hits
        ids = [rng.integers(0, 500, (64, 5)).astype(id_dtype),           # [samples, k]
               rng.integers(-7, 7, 40).astype(id_dtype),                 # Keras wrapping
               rng.integers(0, 3000, (8, 2, 4)).astype(id_dtype),        # any rank
               rng.integers(-1, 500, 30).astype(id_dtype)]
        seg = np.sort(rng.permutation(np.repeat(np.arange(10), 8))[:30]).astype(np.int64)
        kw = dict(segment_ids=[None, None, None, seg], num_rows=[None, None, None, 10])
        want = gc.lookup(ids, **kw)
        for s in (0, 1, 2):
            np.testing.assert_array_equal(want[s], np.take(tables[[0, 1, 2][s]], ids[s], axis=0))
        host = gg.lookup(ids, **kw)
        dev = gg.lookup([cp.asarray(a) for a in ids], segment_ids=[None, None, None, cp.asarray(seg)],
                        num_rows=[None, None, None, 10])
        gg.synchronize()
        for s, w in enumerate(want):
            for got, how in ((host[s], "numpy"), (cp.asnumpy(dev[s]), "cupy")):
                assert got.shape == w.shape and got.dtype == w.dtype, (s, how, got.shape, w.shape)
                if s < 3:     # a gather is a copy: bit for bit
                    np.testing.assert_array_equal(got, w, err_msg=f"slot {s} {how} {tiers}")
                else:
                    np.testing.assert_allclose(got, w, rtol=1e-3 if table_dtype == np.float16 else 1e-6,
                                               atol=1e-6, err_msg=f"slot {s} {how} {tiers}")


@pytest.mark.parametrize("tiers", list(TIERS), ids=list(TIERS))
def test_columns_and_sparse_indices_read_in_place(tiers, seed):
    """ids = cat[:, c] (a strided column) and segment ids = sp_ids.indices ([n, 2]: column 0) give the results of
    contiguous copies."""
    cp = cupy()
    rng = np.random.default_rng(seed)
    tables = [rng.standard_normal((300, 8)).astype(np.float32), rng.standard_normal((50, 4)).astype(np.float32)]
    cpu, gpu, tc, tg = engines(tables, TIERS[tiers])
    slots = lambda t: [tiemb.Slot(t[0], mode="gather"), tiemb.Slot(t[1], "sum"), tiemb.Slot(t[1], "mean", mode="safe"),
                       tiemb.Slot(t[0], "sqrtn")]
    gc, gg = cpu.group(slots(tc)), gpu.group(slots(tg))
    cat = rng.integers(0, 50, (64, 5)).astype(np.int64)
    counts = rng.integers(0, 5, 40)
    seg = np.repeat(np.arange(40), counts)
    indices = np.stack([seg, np.concatenate([np.arange(c) for c in counts])], 1).astype(np.int64)
    vals = rng.integers(0, 50, len(seg)).astype(np.int64)
    plain_seg = np.sort(rng.integers(0, 20, 50))
    ids = [np.ascontiguousarray(cat[:, 2]), vals, vals, rng.integers(0, 300, 50)]
    want = gc.lookup(ids, segment_ids=[None, seg, seg, plain_seg], num_rows=[None, None, 40, None])
    dcat, dind = cp.asarray(cat), cp.asarray(indices)
    dev_ids = [dcat[:, 2], cp.asarray(vals), cp.asarray(vals), cp.asarray(ids[3])]
    assert dev_ids[0].strides == (40,)          # the column is read in place: no copy was made
    got = gg.lookup(dev_ids, segment_ids=[None, dind, dind, cp.asarray(plain_seg)], num_rows=[None, None, 40, None])
    gg.synchronize()
    for s, w in enumerate(want):
        np.testing.assert_allclose(cp.asnumpy(got[s]), w, rtol=1e-6, atol=1e-6, err_msg=f"slot {s} {tiers}")


def padded_reference(table, ids, weights, combiner):
    """Masked pooling over a -1-padded [rows, k] id matrix, as TensorFlow's safe lookup computes it (float64)."""
    out = np.zeros((ids.shape[0], table.shape[1]))
    for r in range(ids.shape[0]):
        keep = ids[r] >= 0
        w = np.ones(ids.shape[1]) if weights is None else weights[r].astype(np.float64)
        if weights is not None and combiner != "sum":
            keep &= w > 0
        if not keep.any():
            continue
        rows = table[ids[r][keep]].astype(np.float64) * w[keep][:, None]
        denom = {"sum": 1.0, "mean": w[keep].sum(), "sqrtn": np.sqrt((w[keep] ** 2).sum())}[combiner]
        out[r] = rows.sum(0) / denom if denom else 0.0
    return out


@pytest.mark.parametrize("tiers", list(TIERS), ids=list(TIERS))
@pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])
@pytest.mark.parametrize("weighted", [False, True])
def test_dense_padded_id_matrix(tiers, combiner, weighted, seed):
    """A [rows, k] id matrix padded with -1 is a safe slot with no segment ids: all-padding rows are zeros."""
    cp = cupy()
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((200, 16)).astype(np.float32)
    gpu = tiemb.GpuEmbeddingEngine(64, 2, 6)
    t = gpu.add_table(table, TIERS[tiers])
    g = gpu.group([tiemb.Slot(t, combiner, mode="safe"), tiemb.Slot(t, combiner, mode="safe")])
    wide = rng.integers(0, 200, (64, 9)).astype(np.int64)
    wide[rng.random(wide.shape) < 0.4] = -1
    wide[:5, 2:8] = -1                                  # rows with nothing valid
    weights = rng.random((64, 6), dtype=np.float32) - 0.2 if weighted else None
    block = np.ascontiguousarray(wide[:, 2:8])
    dev = cp.asarray(wide)
    w = None if weights is None else cp.asarray(weights)
    out = g.lookup([cp.asarray(block), dev[:, 2:8]], weights=[w, w], num_rows=[64, 64])
    g.synchronize()
    want = padded_reference(table, block, weights, combiner)
    for s in (0, 1):   # contiguous, and a column slice of a wider matrix read in place (row stride 9)
        np.testing.assert_allclose(cp.asnumpy(out[s]), want, rtol=1e-5, atol=1e-6, err_msg=f"slot {s}")
        assert not cp.asnumpy(out[s][:5]).any()


def test_resident_gather_and_strided_lookups_replay_in_a_cuda_graph(seed):
    cp = cupy()
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((400, 8)).astype(np.float32)
    gpu = tiemb.GpuEmbeddingEngine(32, 3, 4)
    t = gpu.add_table(table)
    g = gpu.group([tiemb.Slot(t, mode="gather", wrap_negative=True), tiemb.Slot(t, "mean", mode="safe"),
                   tiemb.Slot(t, "sum", mode="safe")])
    cat = cp.asarray(rng.integers(-400, 400, (32, 3)).astype(np.int64))
    padded = cp.asarray(rng.integers(-1, 400, (32, 4)).astype(np.int64))
    counts = rng.integers(0, 4, 32)
    seg = np.repeat(np.arange(32), counts)
    ind = cp.asarray(np.stack([seg, np.zeros_like(seg)], 1).astype(np.int64))
    vals = cp.asarray(rng.integers(0, 400, len(seg)).astype(np.int64))
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        prep = g.prepare([cat[:, 1], padded, vals], segment_ids=[None, None, ind], num_rows=[None, 32, 32],
                         stream=stream)
        prep.run()
        stream.synchronize()
        direct = [cp.asnumpy(o) for o in prep.outputs]
        for o in prep.outputs:
            o.fill(np.nan)                               # poison: the replay must write every element
        stream.begin_capture()
        prep.run()
        graph = stream.end_capture()
        graph.launch(stream)
        stream.synchronize()
    g.synchronize()
    for s, (o, d) in enumerate(zip(prep.outputs, direct)):
        np.testing.assert_array_equal(cp.asnumpy(o), d, err_msg=f"slot {s}")
    np.testing.assert_array_equal(direct[0], table[np.where(cp.asnumpy(cat[:, 1]) < 0, cp.asnumpy(cat[:, 1]) + 400,
                                                            cp.asnumpy(cat[:, 1]))])


def test_gpu_gather_errors_name_the_slot():
    cp = cupy()
    gpu = tiemb.GpuEmbeddingEngine(4, 2, 3)
    t = gpu.add_table(np.ones((5, 2), np.float32))
    g = gpu.group([tiemb.Slot(t, mode="gather", wrap_negative=True), tiemb.Slot(t, mode="gather")])
    g.lookup([cp.asarray(np.array([1, -6], np.int64)), cp.asarray(np.array([0], np.int64))])
    with pytest.raises(ValueError, match=r"slot 0: ids\[1\] = -6 is out of range \[-5, 5\) of table 0"):
        g.synchronize()
    g.lookup([cp.asarray(np.array([1], np.int64)), cp.asarray(np.array([-1], np.int64))])
    with pytest.raises(ValueError, match=r"slot 1: ids\[0\] = -1 is out of range \[0, 5\) of table 0"):
        g.synchronize()
    with pytest.raises(ValueError, match=r"slot 0: 5 samples exceed max_batch_size = 4"):
        g.lookup([cp.zeros((5, 1), cp.int64), cp.zeros(1, cp.int64)])
    with pytest.raises(ValueError, match=r"slot 0: every sample has 4 ids, more than max_nnz = 3"):
        g.lookup([cp.zeros((2, 4), cp.int64), cp.zeros(1, cp.int64)])
    with pytest.raises(ValueError, match=r"wrap_negative is a gather-mode option"):
        gpu.group([tiemb.Slot(t, "sum", wrap_negative=True)])
