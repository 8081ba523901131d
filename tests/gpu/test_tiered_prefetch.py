"""GpuLookupGroup.prefetch (issue 15): the next batch's misses brought into
the GPU cache on the background stream; results stay equal to resident
tables. Also the variants' environment checks."""

import numpy as np
import pytest

import tiemb
from tiered_variants import TIERED_ENV

pytestmark = pytest.mark.gpu

VOCAB, DIM, BATCH, NNZ = 20000, 16, 64, 4


def cupy():
    return pytest.importorskip("cupy")


def groups(tiers, tables):
    """A resident group and a tiered one over the same tables (slots 0, 1 share table 0)."""
    out = []
    for t in (None, tiers):
        e = tiemb.GpuEmbeddingEngine(BATCH, 3, NNZ)
        a, b = e.add_table(tables[0], t), e.add_table(tables[1], t)
        out.append((e, e.group([tiemb.Slot(a, "sum"), tiemb.Slot(a, "mean"), tiemb.Slot(b, "sum")])))
    return out


def fresh_batch(b):
    """256 ids never seen before, none among the first rows a cold cache (and,
    with cpu_cache_percentage 0.5, the host tier) starts with."""
    ids = np.arange(12000 + b * 256, 12000 + (b + 1) * 256, dtype=np.int64)
    return [ids[:128], ids[128:], ids], [np.repeat(np.arange(32), 4)] * 2 + [np.repeat(np.arange(64), 4)]


def lookup(group, ids, segs):
    cp = cupy()
    outs = group.lookup([cp.asarray(i) for i in ids], segment_ids=[cp.asarray(s) for s in segs])
    group.synchronize()
    return [cp.asnumpy(o) for o in outs]


def hit_rate_of(e, fn):
    before = [e.stats(t) for t in (0, 1)]
    out = fn()
    after = [e.stats(t) for t in (0, 1)]
    uniq = sum(a["unique_ids"] - b["unique_ids"] for a, b in zip(after, before))
    hits = sum(a["hits"] - b["hits"] for a, b in zip(after, before))
    return hits / uniq, out


@pytest.mark.parametrize("cpu,host_read", [(1.0, "zero_copy"), (0.5, "zero_copy"), (1.0, "copy")])
@pytest.mark.parametrize("as_numpy", [False, True])
def test_prefetched_batch_hits_and_equals_resident(cpu, host_read, as_numpy, tmp_path, seed, tiered_variant):
    cp = cupy()
    rng = np.random.default_rng(seed)
    tables = [rng.standard_normal((VOCAB, DIM)).astype(np.float32) for _ in range(2)]
    tiers = tiemb.TierConfig(0.1, cpu, 0.0, str(tmp_path / "backing.tiemb"), host_read)
    (_, ref_group), (e, group) = groups(tiers, tables)
    # Control: a fresh batch without prefetch misses (so the check below can fail).
    ids, segs = fresh_batch(0)
    rate, got = hit_rate_of(e, lambda: lookup(group, ids, segs))
    assert rate == 0.0, rate
    for g, r in zip(got, lookup(ref_group, ids, segs)):
        np.testing.assert_array_equal(g, r)
    # Prefetched: every unique id of the batch is a GPU-cache hit.
    ids, segs = fresh_batch(1)
    inserted = e.stats(0)["inserted"]
    group.prefetch(ids if as_numpy else [cp.asarray(i) for i in ids])
    group.wait_prefetch()
    assert e.stats(0)["inserted"] - inserted == 256  # table 0's ids, slots 0 and 1 together
    st = e.stats(0)
    rate, got = hit_rate_of(e, lambda: lookup(group, ids, segs))
    assert rate == 1.0, (rate, tiered_variant)
    assert e.stats(0)["batches"] == st["batches"] + 1  # the prefetch counted no lookup
    for s, (g, r) in enumerate(zip(got, lookup(ref_group, ids, segs))):
        np.testing.assert_array_equal(g, r, err_msg=f"slot {s}, seed {seed}, {tiered_variant}")


def test_prefetch_next_batch_while_serving_is_exact(seed, tiered_variant):
    """The serving pattern: prefetch batch k+1, then look up batch k, back to
    back with no waits; the prefetches' inserts race the lookups' probes and
    background inserts. Results equal resident; prefetching raises the hit rate."""
    cp = cupy()
    rng = np.random.default_rng(seed)
    vocab = 50000
    tables = [rng.standard_normal((vocab, DIM)).astype(np.float32) for _ in range(2)]
    from tiemb.bench.data import zipf_ids

    batches = []
    for _ in range(40):
        ids = zipf_ids(rng, vocab, BATCH * NNZ, 1.05)
        seg = np.repeat(np.arange(BATCH), NNZ).astype(np.int64)
        batches.append(([cp.asarray(ids[:128]), cp.asarray(ids[128:]), cp.asarray(ids)],
                        [cp.asarray(seg[:128]), cp.asarray(seg[128:] - seg[128]), cp.asarray(seg)]))
    rates = {}
    for prefetching in (False, True):
        (_, ref_group), (e, group) = groups(tiemb.TierConfig(0.02, hit_rate_threshold=0.0), tables)
        got, ref = [], []
        for k, (ids, segs) in enumerate(batches):
            if prefetching and k + 1 < len(batches):
                group.prefetch(batches[k + 1][0])
            got.append(group.lookup(ids, segment_ids=segs))
            ref.append(ref_group.lookup(ids, segment_ids=segs))
        group.synchronize()
        group.wait_prefetch()
        ref_group.synchronize()
        for k, (g, r) in enumerate(zip(got, ref)):
            for s in range(3):
                np.testing.assert_array_equal(cp.asnumpy(g[s]), cp.asnumpy(r[s]),
                                              err_msg=f"batch {k}, slot {s}, prefetch {prefetching}, seed {seed}")
        st = e.stats(0)
        rates[prefetching] = st["hits"] / st["unique_ids"]
    assert rates[True] > rates[False], rates


def test_prefetch_bad_input():
    cupy()
    tables = [np.ones((100, 4), np.float32)] * 2
    (_, _), (_, group) = groups(tiemb.TierConfig(0.2), tables)
    ok = np.arange(4, dtype=np.int64)
    with pytest.raises(ValueError, match=r"slot 1: ids\[2\] = 100 is out of range \[0, 100\) of table 0"):
        group.prefetch([ok, np.array([1, 2, 100], np.int64), ok])
    with pytest.raises(ValueError, match=r"slot 0: ids\[0\] = -1 is out of range"):
        group.prefetch([np.array([-1], np.int64), ok, ok])
    with pytest.raises(ValueError, match=r"prefetch got ids for 2 slots but the group has 3"):
        group.prefetch([ok, ok])
    with pytest.raises(ValueError, match=r"slot 2: ids must be int32 or int64, got float32"):
        group.prefetch([ok, ok, ok.astype(np.float32)])
    with pytest.raises(ValueError, match=r"prefetch: slot 0: 257 ids exceed max_batch_size \* max_nnz = 256"):
        group.prefetch([cupy().zeros(257, cupy().int64), ok, ok])


def test_prefetch_refuses_a_capturing_stream():
    """A prefetch inside a CUDA-graph capture would pull the prefetcher's own
    stream into the graph; it is refused, and the group prefetches afterwards."""
    cp = cupy()
    tables = [np.arange(400, dtype=np.float32).reshape(100, 4)] * 2
    (_, _), (e, group) = groups(tiemb.TierConfig(0.2), tables)
    ids = [cp.arange(90, 94, dtype=cp.int64)] * 3
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        x = cp.zeros(1, cp.float32)
        stream.begin_capture()
        try:
            x += 1  # a graph of one node, not an empty one
            with pytest.raises(ValueError, match=r"prefetch cannot be captured in a CUDA graph"):
                group.prefetch(ids, stream=stream)
        finally:
            stream.end_capture()
    inserted = e.stats(0)["inserted"]
    group.prefetch(ids, stream=stream)
    group.wait_prefetch()
    assert e.stats(0)["inserted"] - inserted == 4


@pytest.mark.parametrize("env,value,msg", [
    ("TIEMB_TIERED_PROBE", "walk",
     r"TIEMB_TIERED_PROBE must be one of 'slots', 'list', 'lane' \(or unset\), got 'walk'"),
    ("TIEMB_TIERED_HOST_READS", "lists",
     r"TIEMB_TIERED_HOST_READS must be one of 'inline', 'kernel', 'list' \(or unset\), got 'lists'"),
])
def test_variant_env_values_are_checked(env, value, msg, monkeypatch):
    cupy()
    monkeypatch.setenv(env, value)
    e = tiemb.GpuEmbeddingEngine(4, 1, 2)
    t = e.add_table(np.ones((100, 4), np.float32), tiemb.TierConfig(0.2))
    with pytest.raises(ValueError, match=msg):
        e.group([tiemb.Slot(t, "sum")])


def test_prefetch_keeps_the_variants_the_group_was_built_with(monkeypatch):
    """The prefetcher is made at the first prefetch, but with the group's
    variants: the environment then (here an invalid value) is not read again.
    (benchmarks/gpu_bench.py sets the variables only while a group is built.)"""
    cp = cupy()
    for k in TIERED_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("TIEMB_TIERED_PROBE", "list")
    monkeypatch.setenv("TIEMB_TIERED_HOST_READS", "list")
    tables = [np.arange(400, dtype=np.float32).reshape(100, 4)] * 2
    (_, ref_group), (e, group) = groups(tiemb.TierConfig(0.2), tables)
    monkeypatch.setenv("TIEMB_TIERED_PROBE", "walk")
    ids = [cp.arange(90, 94, dtype=cp.int64)] * 3
    inserted = e.stats(0)["inserted"]
    group.prefetch(ids)
    group.wait_prefetch()
    assert e.stats(0)["inserted"] - inserted == 4
    segs = [np.zeros(4, np.int64)] * 3
    for g, r in zip(lookup(group, [cp.asnumpy(i) for i in ids], segs),
                    lookup(ref_group, [cp.asnumpy(i) for i in ids], segs)):
        np.testing.assert_array_equal(g, r)


def test_contradicting_host_read_variables(monkeypatch):
    cupy()
    monkeypatch.setenv("TIEMB_TIERED_HOST_READS", "list")
    monkeypatch.setenv("TIEMB_TIERED_INLINE_HOST_READS", "0")
    e = tiemb.GpuEmbeddingEngine(4, 1, 2)
    t = e.add_table(np.ones((100, 4), np.float32), tiemb.TierConfig(0.2))
    with pytest.raises(ValueError, match=r"TIEMB_TIERED_INLINE_HOST_READS=0 contradicts TIEMB_TIERED_HOST_READS=list"):
        e.group([tiemb.Slot(t, "sum")])
