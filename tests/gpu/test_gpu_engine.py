"""The GPU engine against the CPU engine (itself checked against TensorFlow)
and a float64 NumPy reference; tiered tables against resident ones."""

import numpy as np
import pytest

import tiemb
from oracle import assert_within_bound, foundation_grid, numpy_lookup, random_slot
from tiered_variants import TIERED_ENV

pytestmark = pytest.mark.gpu

TOL = {np.float32: 1e-6, np.float16: 1e-3}
MAX_BATCH, MAX_NNZ = 64, 5


def cupy():
    return pytest.importorskip("cupy")


def cpu_outputs(cases):
    e = tiemb.EmbeddingEngine(MAX_BATCH, len(cases), MAX_NNZ)
    g = e.group([tiemb.Slot(e.add_table(c.table), c.combiner, c.mode, c.default_id) for c in cases])
    return g.lookup([c.ids for c in cases], segment_ids=[c.segment_ids for c in cases],
                    weights=[c.weights for c in cases],
                    num_rows=[c.num_rows if c.mode == "safe" else None for c in cases])


def gpu_group(cases, tiers=None):
    e = tiemb.GpuEmbeddingEngine(MAX_BATCH, len(cases), MAX_NNZ)
    slots = [tiemb.Slot(e.add_table(c.table, tiers), c.combiner, c.mode, c.default_id) for c in cases]
    return e, e.group(slots)


def gpu_lookup(group, cases, device, use_offsets=False):
    cp = cupy() if device else None
    conv = (lambda a: None if a is None else cp.asarray(a)) if device else (lambda a: a)
    kw = dict(row_offsets=[conv(c.row_offsets) for c in cases]) if use_offsets else dict(
        segment_ids=[conv(c.segment_ids) for c in cases],
        num_rows=[c.num_rows if c.mode == "safe" else None for c in cases])
    outs = group.lookup([conv(c.ids) for c in cases], weights=[conv(c.weights) for c in cases], **kw)
    if device:
        group.synchronize()
        outs = [cp.asnumpy(o) for o in outs]
    return outs


def check_against_references(outs, cases, seed, label):
    cpu = cpu_outputs(cases)
    for s, (got, case, ref_cpu) in enumerate(zip(outs, cases, cpu)):
        where = f"{label}, seed {seed}, slot {s} ({case.combiner}, {case.mode}, w={case.weights is not None})"
        assert got.dtype == ref_cpu.dtype, where
        tol = TOL[case.table.dtype.type]
        assert_within_bound(got, ref_cpu, case, tol, where + " vs CPU engine")
        assert_within_bound(got, numpy_lookup(case), case, tol, where + " vs NumPy")


@foundation_grid
def test_gpu_matches_cpu_and_numpy(combiner, weighted, mode, id_dtype, table_dtype, dim, num_slots, seed):
    rng = np.random.default_rng(seed)
    cases = [random_slot(rng, dim=dim, table_dtype=table_dtype, id_dtype=id_dtype, combiner=combiner, mode=mode,
                         weighted=weighted, max_batch=MAX_BATCH, max_nnz=MAX_NNZ,
                         default_id=(mode == "safe" and rng.random() < 0.5)) for _ in range(num_slots)]
    _, group = gpu_group(cases)
    check_against_references(gpu_lookup(group, cases, device=False), cases, seed, "numpy inputs")
    check_against_references(gpu_lookup(group, cases, device=True), cases, seed, "cupy inputs")
    check_against_references(gpu_lookup(group, cases, device=True, use_offsets=True), cases, seed, "cupy offsets")


def test_mixed_slots_dims_and_odd_sizes(seed):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(70):  # more than one launch's worth of slots (64)
        mode = str(rng.choice(["plain", "safe"]))
        cases.append(random_slot(rng, dim=int(rng.choice([1, 2, 3, 6, 8, 12, 33, 64, 200, 300])),
                                 table_dtype=[np.float32, np.float16][rng.integers(2)],
                                 id_dtype=[np.int32, np.int64][rng.integers(2)],
                                 combiner=str(rng.choice(["sum", "mean", "sqrtn"])), mode=mode,
                                 weighted=bool(rng.random() < 0.5), max_batch=MAX_BATCH, max_nnz=MAX_NNZ,
                                 default_id=(mode == "safe" and rng.random() < 0.5)))
    _, group = gpu_group(cases)
    check_against_references(gpu_lookup(group, cases, device=True), cases, seed, "70 mixed slots")


def test_prepared_lookup_rereads_inputs(seed):
    cp = cupy()
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((100, 16)).astype(np.float32)
    e = tiemb.GpuEmbeddingEngine(8, 1, 2)
    g = e.group([tiemb.Slot(e.add_table(table), "sum", mode="safe")])
    ids = cp.asarray(np.array([1, 2, 3, 4], np.int64))
    seg = cp.asarray(np.array([0, 0, 1, 3], np.int64))
    prep = g.prepare([ids], segment_ids=[seg], num_rows=4)
    (out,) = prep.run()
    g.synchronize()
    np.testing.assert_allclose(cp.asnumpy(out), [table[1] + table[2], table[3], np.zeros(16), table[4]], rtol=1e-6)
    ids[:] = cp.asarray(np.array([9, 9, 9, 9], np.int64))
    prep.run()
    g.synchronize()
    np.testing.assert_allclose(cp.asnumpy(out), [2 * table[9], table[9], np.zeros(16), table[9]], rtol=1e-6)


# ---- tiered tables ------------------------------------------------------------

def zipf_batches(rng, vocab, batches, batch, nnz, alpha=1.1):
    from tiemb.bench.data import zipf_ids

    return [(zipf_ids(rng, vocab, batch * nnz, alpha), np.repeat(np.arange(batch), nnz).astype(np.int64))
            for _ in range(batches)]


def run_batches(tiers, tables, batches, combiners, profile=None, device=True):
    """Slots 0,1 share table 0; slot 2 uses table 1. Returns outputs and the engine."""
    cp = cupy()
    e = tiemb.GpuEmbeddingEngine(64, 3, 8)
    t0 = e.add_table(tables[0], tiers, profile_ids=profile)
    t1 = e.add_table(tables[1], tiers, profile_ids=profile)
    g = e.group([tiemb.Slot(t0, combiners[0]), tiemb.Slot(t0, combiners[1]), tiemb.Slot(t1, combiners[2])])
    outs = []
    for ids, seg in batches:
        parts = [ids[: len(ids) // 2], ids[len(ids) // 2:], ids]
        segs = [seg[: len(ids) // 2], seg[len(ids) // 2:] - seg[len(ids) // 2], seg]
        if device:
            res = g.lookup([cp.asarray(p) for p in parts], segment_ids=[cp.asarray(s) for s in segs])
            outs.append([cp.asnumpy(r) for r in res])
        else:
            outs.append(g.lookup(parts, segment_ids=segs))
    g.synchronize()
    return outs, e


@pytest.mark.parametrize("cache,cpu,threshold,host_read", [
    (0.05, 1.0, 1.0, "zero_copy"),   # always insert before returning
    (0.05, 1.0, 0.0, "zero_copy"),   # always insert in the background
    (0.2, 1.0, 0.95, "zero_copy"),
    (0.2, 1.0, 0.95, "copy"),
    (0.2, 0.5, 0.95, "zero_copy"),   # a third of rows only in the backing file
    (0.6, 0.3, 0.0, "copy"),
])
@pytest.mark.parametrize("dtype,dim", [(np.float32, 16), (np.float16, 8), (np.float32, 3)])
def test_tiered_equals_resident_exactly(cache, cpu, threshold, host_read, dtype, dim, tmp_path, seed,
                                        tiered_variant):
    rng = np.random.default_rng(seed)
    vocab = 3000
    tables = [rng.standard_normal((vocab, dim)).astype(dtype) for _ in range(2)]
    batches = zipf_batches(rng, vocab, 12, 64, 8)
    combiners = ["sum", "mean", "sqrtn"]
    ref, _ = run_batches(tiemb.TierConfig(cache_percentage=1.0), tables, batches, combiners)
    tiers = tiemb.TierConfig(cache, cpu, threshold, str(tmp_path / "backing.tiemb"), host_read)
    for device in (True, False):
        got, e = run_batches(tiers, tables, batches, combiners, device=device)
        for b, (r, g) in enumerate(zip(ref, got)):
            for s in range(3):
                np.testing.assert_array_equal(g[s], r[s], err_msg=f"batch {b}, slot {s}, seed {seed}, "
                                                                  f"{tiered_variant}")
        # Statistics add up.
        for t, ids_of_batch in ((0, lambda ids: ids), (1, lambda ids: ids)):
            st = e.stats(t)
            assert st["batches"] == len(batches)
            assert st["lookups"] == sum(len(ids) for ids, _ in batches)
            assert st["unique_ids"] == sum(len(np.unique(ids_of_batch(ids))) for ids, _ in batches)
            assert st["hits"] + st["host_hits"] + st["host_fetches"] == st["unique_ids"]
            sizes = tiemb._C.tier_sizes(vocab, cache, cpu)
            assert (st["rows_gpu"], st["rows_host"], st["rows_file"]) == \
                (sizes["gpu_rows"], sizes["host_rows"], sizes["file_rows"])
            assert st["inserted"] <= st["unique_ids"] - st["hits"]
            if threshold == 1.0:
                assert st["sync_inserts"] > 0
            if threshold == 0.0:
                assert st["sync_inserts"] == 0
            if host_read == "zero_copy" and cpu == 1.0:
                assert st["host_fetches"] == 0
            if cpu < 1.0 or host_read == "copy":
                assert st["host_fetches"] > 0
            # Per-tier shares (issue 15): backing_reads counts only rows outside host memory.
            assert st["gpu_hit_rate"] + st["host_hit_rate"] + st["backing_hit_rate"] == pytest.approx(1.0)
            assert st["gpu_hit_rate"] == st["hit_rate"]
            if cpu == 1.0:
                assert st["backing_reads"] == 0
            else:
                assert 0 < st["backing_reads"] <= st["host_fetches"]
                if host_read == "zero_copy":
                    assert st["backing_reads"] == st["host_fetches"]


# The host-read paths of test_zero_copy_reads_in_or_after_the_probe_are_exact.
HOST_READ_ENV = {
    "0": {"TIEMB_TIERED_INLINE_HOST_READS": "0"},
    "1": {"TIEMB_TIERED_INLINE_HOST_READS": "1"},
    "list": {"TIEMB_TIERED_HOST_READS": "list", "TIEMB_TIERED_PROBE": "list"},
    "lane": {"TIEMB_TIERED_PROBE": "lane"},
    "lane_kernel": {"TIEMB_TIERED_PROBE": "lane", "TIEMB_TIERED_HOST_READS": "kernel"},
    "lane_list": {"TIEMB_TIERED_PROBE": "lane", "TIEMB_TIERED_HOST_READS": "list"},
}


@pytest.mark.parametrize("inline,policy", [("0", "lru"), ("1", "lru"), ("0", "lru_admit"),
                                           ("list", "lru"), ("list", "lru_admit"), ("lane", "lru"),
                                           ("lane", "lru_admit"), ("lane_kernel", "lru_admit"),
                                           ("lane_list", "lru_admit")])
def test_zero_copy_reads_in_or_after_the_probe_are_exact(inline, policy, monkeypatch, tmp_path, seed):
    """Zero-copy misses are read inside the probe (TIEMB_TIERED_INLINE_HOST_READS=1,
    the default), by host_read_kernel after it (=0), or from the probe's address
    list by host_read_list_kernel (TIEMB_TIERED_HOST_READS=list, with the listed
    probe too), also behind the lane probe (TIEMB_TIERED_PROBE=lane): all equal
    resident, with rows in the GPU cache, in host memory and in the backing file."""
    rng = np.random.default_rng(seed)
    tables = [rng.standard_normal((4000, 16)).astype(np.float32) for _ in range(2)]
    batches = zipf_batches(rng, 4000, 10, 64, 8)
    ref, _ = run_batches(tiemb.TierConfig(cache_percentage=1.0), tables, batches, ["sum", "mean", "sum"])
    for k in TIERED_ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in HOST_READ_ENV[inline].items():
        monkeypatch.setenv(k, v)
    tiers = tiemb.TierConfig(0.1, 0.6, 0.95, str(tmp_path / "backing.tiemb"), "zero_copy", policy)
    got, e = run_batches(tiers, tables, batches, ["sum", "mean", "sum"])
    for b, (r, g) in enumerate(zip(ref, got)):
        for s in range(3):
            np.testing.assert_array_equal(g[s], r[s], err_msg=f"batch {b}, slot {s}, inline {inline}, seed {seed}")
    st = e.stats(0)
    assert st["host_hits"] > 0 and st["backing_reads"] > 0 and st["hits"] > 0
    if policy == "lru_admit":  # the filter kept some misses out
        assert st["inserted"] < st["unique_ids"] - st["hits"]


@pytest.mark.parametrize("dtype,dim", [(np.float16, 3), (np.float32, 2), (np.float32, 6), (np.float32, 40)])
def test_tiered_row_widths_equal_resident(dtype, dim, tmp_path, seed, tiered_variant):
    """Rows of 6, 8, 24 and 160 bytes: the lane probe copies a row in 2-, 8-,
    8- and 16-byte loads, 8 at a time (160 bytes: a second, partial round);
    the other variants' copies too. Rows in the GPU cache, host memory and the
    backing file, cache rows read while the background inserter writes."""
    rng = np.random.default_rng(seed)
    tables = [rng.standard_normal((3000, dim)).astype(dtype) for _ in range(2)]
    batches = zipf_batches(rng, 3000, 12, 64, 8)
    ref, _ = run_batches(tiemb.TierConfig(cache_percentage=1.0), tables, batches, ["sum", "mean", "sum"])
    tiers = tiemb.TierConfig(0.2, 0.5, 0.95, str(tmp_path / "backing.tiemb"), "zero_copy")
    got, e = run_batches(tiers, tables, batches, ["sum", "mean", "sum"])
    for b, (r, g) in enumerate(zip(ref, got)):
        for s in range(3):
            np.testing.assert_array_equal(g[s], r[s], err_msg=f"batch {b}, slot {s}, dim {dim}, {tiered_variant}")
    st = e.stats(0)
    assert st["hits"] > 0 and st["host_hits"] > 0 and st["backing_reads"] > 0
    assert st["hits"] + st["host_hits"] + st["host_fetches"] == st["unique_ids"]


def test_hit_rate_extremes(seed, tiered_variant):
    """0 % hits (every batch new ids, cold cache) and 100 % (cache warm from the profile)."""
    rng = np.random.default_rng(seed)
    vocab, dim = 20000, 16
    tables = [rng.standard_normal((vocab, dim)).astype(np.float32) for _ in range(2)]
    seg = np.repeat(np.arange(64), 4).astype(np.int64)
    # Fresh ids every batch, none of them among the first rows the cold cache starts with.
    fresh = [(np.arange(5000 + b * 256, 5000 + (b + 1) * 256, dtype=np.int64), seg) for b in range(10)]
    ref, _ = run_batches(tiemb.TierConfig(cache_percentage=1.0), tables, fresh, ["sum"] * 3)
    got, e = run_batches(tiemb.TierConfig(cache_percentage=0.05, hit_rate_threshold=1.0), tables, fresh, ["sum"] * 3)
    assert e.stats(0)["hits"] == 0 and e.stats(1)["hits"] == 0
    for r, g in zip(ref, got):
        for s in range(3):
            np.testing.assert_array_equal(g[s], r[s])
    # The same few ids again and again, cache warm from a profile of them.
    hot = rng.choice(vocab, 200, replace=False).astype(np.int64)
    repeat = [(rng.choice(hot, 256), seg) for _ in range(10)]
    ref, _ = run_batches(tiemb.TierConfig(cache_percentage=1.0), tables, repeat, ["mean"] * 3)
    got, e = run_batches(tiemb.TierConfig(cache_percentage=0.05), tables, repeat, ["mean"] * 3, profile=hot)
    for t in (0, 1):
        st = e.stats(t)
        assert st["hits"] == st["unique_ids"] > 0, st
    for r, g in zip(ref, got):
        for s in range(3):
            np.testing.assert_array_equal(g[s], r[s])


def test_background_insertion_under_load(seed, tiered_variant):
    """Many back-to-back lookups while the background stream inserts: still exact."""
    cp = cupy()
    rng = np.random.default_rng(seed)
    vocab, dim = 50000, 32
    table = rng.standard_normal((vocab, dim)).astype(np.float32)
    batches = zipf_batches(rng, vocab, 60, 512, 4, alpha=1.05)
    re = tiemb.GpuEmbeddingEngine(512, 1, 4)
    rg = re.group([tiemb.Slot(re.add_table(table), "sum")])
    te = tiemb.GpuEmbeddingEngine(512, 1, 4)
    tg = te.group([tiemb.Slot(te.add_table(table, tiemb.TierConfig(0.02, hit_rate_threshold=0.0)), "sum")])
    dev = [(cp.asarray(i), cp.asarray(s)) for i, s in batches]
    ref = [rg.lookup([i], segment_ids=[s])[0] for i, s in dev]
    got = [tg.lookup([i], segment_ids=[s])[0] for i, s in dev]
    tg.synchronize()
    rg.synchronize()
    for b, (r, g) in enumerate(zip(ref, got)):
        np.testing.assert_array_equal(cp.asnumpy(g), cp.asnumpy(r), err_msg=f"batch {b}")
    st = te.stats(0)
    assert st["sync_inserts"] == 0 and st["inserted"] > 0


def test_calls_on_different_streams_start_in_order(seed, tiered_variant):
    """One group called back to back on two cupy streams and (numpy ids) on
    its own stream, with no waits in between: calls share the group's scratch,
    so each starts after the last. The calls are large, with nearly every row
    read over the host link, so an unordered call would overlap the last
    one's probe (with the listed probe that leaves stale keys in the hash set
    for every later call). Equal to resident."""
    cp = cupy()
    rng = np.random.default_rng(seed)
    vocab, dim, n = 400_000, 16, 32768
    table = rng.standard_normal((vocab, dim)).astype(np.float32)
    batches = [rng.integers(0, vocab, n).astype(np.int64) for _ in range(24)]
    re = tiemb.GpuEmbeddingEngine(n, 1, 1)
    rg = re.group([tiemb.Slot(re.add_table(table), mode="gather")])
    te = tiemb.GpuEmbeddingEngine(n, 1, 1)
    tg = te.group([tiemb.Slot(te.add_table(table, tiemb.TierConfig(0.02)), mode="gather")])
    dev = [cp.asarray(b) for b in batches]
    ref = [cp.asnumpy(rg.lookup([d])[0]) for d in dev]
    streams = [cp.cuda.Stream(non_blocking=True) for _ in range(2)]
    cp.cuda.Device().synchronize()
    got = []
    for k, (b, d) in enumerate(zip(batches, dev)):
        if k % 3 == 2:
            got.append(tg.lookup([b])[0])  # numpy ids: the group's own (non-blocking) stream
        else:
            got.append(tg.lookup([d], stream=streams[k % 3])[0])
    tg.synchronize()
    cp.cuda.Device().synchronize()
    for k, (g, r) in enumerate(zip(got, ref)):
        g = g if isinstance(g, np.ndarray) else cp.asnumpy(g)
        np.testing.assert_array_equal(g, r, err_msg=f"call {k}, seed {seed}, {tiered_variant}")


# ---- bad input ----------------------------------------------------------------

@pytest.fixture
def small_group():
    e = tiemb.GpuEmbeddingEngine(4, 2, 2)
    t0 = e.add_table(np.ones((10, 4), np.float32))
    t1 = e.add_table(np.ones((5, 2), np.float16), tiemb.TierConfig(cache_percentage=0.5))
    return e.group([tiemb.Slot(t0, "sum"), tiemb.Slot(t1, "mean", mode="safe")])


def _inputs(cp, ids0=(1, 2, 3), seg0=(0, 0, 1), ids1=(0, 4), seg1=(0, 2)):
    return ([cp.asarray(np.array(ids0, np.int64)), cp.asarray(np.array(ids1, np.int32))],
            [cp.asarray(np.array(seg0, np.int64)), cp.asarray(np.array(seg1, np.int64))])


@pytest.mark.parametrize("kw,msg", [
    (dict(ids0=(1, 10, 3)), r"slot 0: ids\[1\] = 10 is out of range \[0, 10\) of table 0"),
    (dict(ids0=(1, -1, 3)), r"slot 0: ids\[1\] = -1 is out of range \[0, 10\) of table 0"),
    (dict(ids1=(0, 5)), r"slot 1: ids\[1\] = 5 is out of range \[0, 5\) of table 1"),
    (dict(seg0=(0, 1, 0)), r"slot 0: segment_ids must be sorted"),
    (dict(seg1=(-1, 2)), r"slot 1: segment_ids\[0\] = -1 is negative"),
    (dict(seg0=(0, 0, 0)), r"slot 0: sample 0 has 3 ids, more than max_nnz = 2"),
    (dict(seg1=(1, 1, 1), ids1=(0, 1, 2)), r"slot 1: sample 1 has 3 ids, more than max_nnz = 2"),
])
def test_device_data_errors_are_raised_after_the_call(small_group, kw, msg):
    cp = cupy()
    ids, segs = _inputs(cp, **kw)
    small_group.lookup(ids, segment_ids=segs, num_rows=[None, 3])
    with pytest.raises(ValueError, match=msg):
        small_group.synchronize()
    # The group stays usable, and the error is reported once.
    ids, segs = _inputs(cp)
    a, b = small_group.lookup(ids, segment_ids=segs, num_rows=[None, 3])
    small_group.synchronize()
    assert a.shape == (2, 4) and b.shape == (3, 2)


def test_device_error_surfaces_at_next_lookup(small_group):
    cp = cupy()
    ids, segs = _inputs(cp, ids0=(1, 99, 3))
    small_group.lookup(ids, segment_ids=segs, num_rows=[None, 3])
    cp.cuda.get_current_stream().synchronize()
    ids, segs = _inputs(cp)
    with pytest.raises(ValueError, match=r"slot 0: ids\[1\] = 99 is out of range"):
        small_group.lookup(ids, segment_ids=segs, num_rows=[None, 3])


@pytest.mark.parametrize("kw,msg", [
    (dict(ids0=(1, 10, 3)), r"slot 0: ids\[1\] = 10 is out of range \[0, 10\) of table 0"),
    (dict(seg0=(1, 0, 1)), r"slot 0: segment_ids must be sorted, but segment_ids\[1\] = 0 < segment_ids\[0\] = 1"),
    (dict(seg0=(0, 0, 0)), r"slot 0: sample 0 has 3 ids, more than max_nnz = 2"),
])
def test_numpy_inputs_give_the_cpu_messages(small_group, kw, msg):
    ids = [np.array(kw.get("ids0", (1, 2, 3)), np.int64), np.array((0, 4), np.int32)]
    segs = [np.array(kw.get("seg0", (0, 0, 1)), np.int64), np.array((0, 2), np.int64)]
    with pytest.raises(ValueError, match=msg):
        small_group.lookup(ids, segment_ids=segs, num_rows=[None, 3])


def test_device_shape_errors(small_group):
    cp = cupy()
    ids, segs = _inputs(cp)
    with pytest.raises(ValueError, match=r"slot 0: ids must be int32 or int64, got float32"):
        small_group.lookup([ids[0].astype(cp.float32), ids[1]], segment_ids=segs, num_rows=[None, 3])
    with pytest.raises(ValueError, match=r"slot 0: ids has strides \(-8,\) that are not whole, non-negative elements"):
        small_group.lookup([cp.arange(3, dtype=cp.int64)[::-1], ids[1]], segment_ids=segs, num_rows=[None, 3])
    with pytest.raises(ValueError, match=r"mix of device and host arrays"):
        small_group.lookup([ids[0], np.array([0, 4], np.int32)], segment_ids=segs, num_rows=[None, 3])
    with pytest.raises(ValueError, match=r"slot 1: 7 output rows exceed max_batch_size = 4"):
        small_group.lookup(ids, segment_ids=segs, num_rows=[None, 7])
    with pytest.raises(ValueError, match=r"slot 0: 9 ids exceed max_batch_size \* max_nnz = 4 \* 2 = 8"):
        small_group.lookup([cp.zeros(9, cp.int64), ids[1]],
                           segment_ids=[cp.zeros(9, cp.int64), segs[1]], num_rows=[None, 3])


def test_tiered_counts_and_results_at_scale(seed, tiered_variant):
    """Large Zipf batches (thousands of repeats of hot ids racing in dedup):
    exact unique counts per batch and results equal to resident tables."""
    cp = cupy()
    rng = np.random.default_rng(seed)
    slots, vocab, dim, batch, nnz = 4, 200_000, 16, 4096, 10
    tables = [rng.standard_normal((vocab, dim)).astype(np.float32) for _ in range(slots)]
    batches = [[zipf_batches(rng, vocab, 1, batch, nnz)[0] for _ in range(slots)] for _ in range(6)]
    outs = {}
    for label, tiers in (("resident", None), ("tiered", tiemb.TierConfig(0.05, hit_rate_threshold=0.5))):
        e = tiemb.GpuEmbeddingEngine(batch, slots, nnz)
        g = e.group([tiemb.Slot(e.add_table(t, tiers), "sum") for t in tables])
        outs[label] = []
        for b in batches:
            res = g.lookup([cp.asarray(i) for i, _ in b], segment_ids=[cp.asarray(s) for _, s in b])
            outs[label].append([cp.asnumpy(r) for r in res])
        g.synchronize()
        if label == "tiered":
            for t in range(slots):
                st = e.stats(t)
                assert st["unique_ids"] == sum(len(np.unique(b[t][0])) for b in batches), st
                assert st["lookups"] == len(batches) * batch * nnz
                assert st["hits"] + st["host_hits"] == st["unique_ids"]
    for k, (r, t) in enumerate(zip(outs["resident"], outs["tiered"])):
        for s in range(slots):
            np.testing.assert_array_equal(t[s], r[s], err_msg=f"batch {k}, slot {s}, seed {seed}")


class _DLPackOnly:
    """An array that speaks only DLPack (as JAX arrays do)."""

    def __init__(self, a):
        self._a = a

    def __dlpack__(self, *args, **kwargs):
        return self._a.__dlpack__(*args, **kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_dlpack_and_torch_inputs(seed):
    cp = cupy()
    rng = np.random.default_rng(seed)
    case = random_slot(rng, dim=16, table_dtype=np.float32, id_dtype=np.int64, combiner="mean", mode="plain",
                       weighted=True)
    _, group = gpu_group([case])
    want = gpu_lookup(group, [case], device=True)[0]
    ids, segs, w = cp.asarray(case.ids), cp.asarray(case.segment_ids), cp.asarray(case.weights)
    (got,) = group.lookup([_DLPackOnly(ids)], segment_ids=[_DLPackOnly(segs)], weights=[_DLPackOnly(w)])
    group.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(got), want)
    torch = pytest.importorskip("torch")
    t = [torch.as_tensor(np.asarray(x), device="cuda") for x in (case.ids, case.segment_ids, case.weights)]
    (got,) = group.lookup([t[0]], segment_ids=[t[1]], weights=[t[2]])
    group.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(got), want)


@pytest.mark.parametrize("config", [None, {"tiemb/cache_percentage": 0.25, "tiemb/cpu_cache_percentage": 0.5,
                                           "tiemb/hit_rate_threshold": 0.9}], ids=["resident", "tiered"])
def test_engine_from_a_table_store(config, tmp_path, seed):
    """The engine the TensorFlow op's GPU kernel builds from a table store
    (shared per store and device; tiers from its store.json) gives the CPU
    engine's results."""
    from tiemb import tf_ops

    rng = np.random.default_rng(seed)
    cases = [random_slot(rng, combiner=c, mode=m, weighted=w, id_dtype=np.int64, table_dtype=np.float32, dim=8,
                         max_batch=MAX_BATCH, vocab=300, max_nnz=MAX_NNZ)
             for c, m, w in (("sum", "plain", False), ("mean", "safe", True), ("sqrtn", "plain", True))]
    store = str(tmp_path / "store")
    tf_ops.write_store(store, {f"t{k}.tiemb": c.table for k, c in enumerate(cases)}, max_batch_size=MAX_BATCH,
                       slot_num=len(cases), max_nnz=MAX_NNZ)
    if config:
        from tiemb import store as table_store

        table_store.write_tiers(store, config)
    e = tiemb.GpuEmbeddingEngine.from_store(store)
    assert e.store_tables == [f"t{k}.tiemb" for k in range(len(cases))]
    again = tiemb.GpuEmbeddingEngine.from_store(store)
    assert again._engine.address == e._engine.address, "a second opening of the store built a second engine"
    group = e.group([tiemb.Slot(k, c.combiner, c.mode, c.default_id) for k, c in enumerate(cases)])
    for _ in range(3):     # tiered: misses, then hits
        check_against_references(gpu_lookup(group, cases, device=True), cases, seed, f"store ({config})")
    if config:
        assert e.stats(0)["rows_gpu"] < cases[0].table.shape[0] and e.stats(0)["rows_file"] > 0, e.stats(0)


def test_dense_id_matrix_numpy_inputs_equal_the_cpu_engine(seed):
    """A safe slot given a -1-padded [rows, k] numpy id matrix (no segment ids): the GPU engine's host path gives
    the CPU engine's result."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((30, 4)).astype(np.float32)
    ids = rng.integers(-1, 30, (8, 3)).astype(np.int64)
    ids[0] = -1
    cpu = tiemb.EmbeddingEngine(8, 1, 3)
    want = cpu.group([tiemb.Slot(cpu.add_table(table), "mean", mode="safe")]).lookup([ids])[0]
    gpu = tiemb.GpuEmbeddingEngine(8, 1, 3)
    got = gpu.group([tiemb.Slot(gpu.add_table(table), "mean", mode="safe")]).lookup([ids])[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert not got[0].any()
