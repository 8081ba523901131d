"""The CPU simulator of the GPU cache (csrc/core/cache_sim.h) on cases small
enough to work out by hand: set placement by the splitmix64 hash, the warm
start, per-batch dedup, per-tier counts, LRU eviction order."""

import numpy as np
import pytest

from tiemb import _C

M64 = (1 << 64) - 1


def mix64(x):  # splitmix64 finaliser, written out independently of the C++
    x &= M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def one_set(**kw):
    """1000 rows, cache_percentage 0.032: exactly one set of 32 ways."""
    s = _C.CacheSimulator(1000, 0.032, **kw)
    assert s.cache_sets == 1
    return s


def test_warm_start_is_first_rows_without_profile():
    s = one_set()
    assert s.keys == list(range(32))
    assert s.stamps == [0] * 32


def test_warm_start_follows_profile_counts():
    s = one_set(profile_ids=np.array([901, 900, 900, 900, 901, 5000, -3]))  # out-of-range ids ignored
    assert s.keys[:3] == [900, 901, 0]
    assert s.keys[3:] == list(range(1, 30))


def test_lru_evicts_oldest_stamp_then_lowest_way():
    s = one_set()
    s.batch(np.array([5]))            # batch 1: hit, way 5 stamped 1
    assert s.stamps[5] == 1
    s.batch(np.array([100]))          # batch 2: every way but 5 has age 2: way 0 (id 0) goes
    assert s.keys[0] == 100 and s.stamps[0] == 2 and s.keys[5] == 5
    s.batch(np.array([0, 101, 102]))  # batch 3: 0 was evicted; ways 1, 2, 3 are the oldest now
    assert s.keys[:6] == [100, 0, 101, 102, 4, 5]
    assert s.stamps[:6] == [2, 3, 3, 3, 0, 1]
    c = s.counts
    assert (c["batches"], c["unique_ids"], c["hits"], c["inserted"]) == (3, 5, 1, 4)


def test_hits_in_a_batch_are_not_evicted_by_its_inserts():
    s = one_set()
    # Batch 1 hits ways 0..30 and misses 500: the only way older than batch 1 is 31.
    s.batch(np.array(list(range(31)) + [500]))
    assert s.keys[31] == 500 and s.keys[:31] == list(range(31))


def test_more_misses_than_ways_in_one_batch():
    s = one_set()
    new = list(range(600, 640))       # 40 misses into 32 ways, inserted in order of first appearance
    s.batch(np.array(new))
    # Ways 0..31 take 600..631; then every way has age 0 and ties go to the
    # lowest way, so 632..639 each replace way 0 in turn.
    assert s.keys == [639] + new[1:32]
    assert s.counts["inserted"] == 40


def test_dedup_per_batch_and_ids_outside_the_table():
    s = one_set()
    s.batch(np.array([7, 7, 7, 500, 500, -1, 1000, 99999]))
    c = s.counts
    assert (c["lookups"], c["unique_ids"], c["hits"], c["host_hits"], c["inserted"]) == (8, 2, 1, 1, 1)
    s.batch(np.array([500, 500]))     # the next batch sees the inserted row
    assert s.counts["hits"] == 2


def test_tiers_host_and_backing():
    s = _C.CacheSimulator(1000, 0.032, cpu_cache_percentage=0.5)  # host tier: rows 0..499
    s.batch(np.array([10, 300, 600, 600]))
    c = s.counts
    assert (c["unique_ids"], c["hits"], c["host_hits"], c["backing_reads"]) == (3, 1, 1, 1)


def test_resident_counts_every_id_a_hit():
    s = _C.CacheSimulator(100, 1.0)
    s.batch(np.array([1, 2, 2, 99]))
    assert (s.counts["unique_ids"], s.counts["hits"], s.counts["inserted"]) == (3, 3, 0)


def test_set_of_a_row_is_splitmix64_mod_sets():
    rows, pct = 10_000, 0.1  # ceil(1000 / 32) = 32 sets
    s = _C.CacheSimulator(rows, pct)
    sets = s.cache_sets
    assert sets == _C.tier_sizes(rows, pct, 1.0)["cache_sets"] == 32
    keys = np.array(s.keys).reshape(sets, 32)
    for st in range(sets):
        for k in keys[st]:
            if k >= 0:
                assert mix64(int(k)) % sets == st
    ids = np.arange(5000, 5200)
    s.batch(ids)
    keys = np.array(s.keys).reshape(sets, 32)
    for i in ids:
        assert i in keys[mix64(int(i)) % sets]  # fewer than 32 new rows per set: all inserted


def test_policies_lfu_and_admission():
    # LFU keeps the row seen in more batches; LRU evicts it when it is oldest.
    lfu, lru = one_set(policy="lfu"), one_set(policy="lru")
    for s in (lfu, lru):
        s.batch(np.array([0]))
        s.batch(np.array([0]))
        s.batch(np.array(list(range(1, 32))))  # every way but 0 stamped 3; 0 seen in 2 batches
        s.batch(np.array([700]))
    assert 0 not in lru.keys and 700 in lru.keys
    assert 0 in lfu.keys and 700 in lfu.keys and 1 not in lfu.keys  # 1..31 seen once: lowest-way tie
    adm = one_set(policy="lru_admit")
    adm.batch(np.array([700]))               # seen once, victim (id 0) seen 0 times: admitted
    assert 700 in adm.keys
    adm.batch(np.array(list(range(1, 32)) + [700]))
    adm.batch(np.array([800]))               # victim 1..31 seen once, 800 once: rejected
    assert 800 not in adm.keys and adm.counts["rejected"] == 1
    with pytest.raises(ValueError, match="cache policy must be 'lru', 'lfu' or 'lru_admit', got 'fifo'"):
        _C.CacheSimulator(100, 0.5, policy="fifo")


def test_simulate_cache_equals_stepping():
    rng = np.random.default_rng(0)
    batches = [rng.zipf(1.2, 300) % 5000 for _ in range(20)]
    s = _C.CacheSimulator(5000, 0.05)
    for b in batches:
        s.batch(b)
    offsets = np.concatenate([[0], np.cumsum([b.size for b in batches])])
    assert _C.simulate_cache(5000, 0.05, 1.0, None, np.concatenate(batches), offsets) == s.counts


def test_warmup_batches_are_not_counted():
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 3000, 200) for _ in range(10)]
    ids, offsets = np.concatenate(batches), np.arange(0, 2001, 200)
    full = _C.simulate_cache(3000, 0.1, 1.0, None, ids, offsets)
    after = _C.simulate_cache(3000, 0.1, 1.0, None, ids, offsets, warmup=4)
    s = _C.CacheSimulator(3000, 0.1)
    for b in batches[:4]:
        s.batch(b)
    warm = dict(s.counts)
    assert all(after[k] == full[k] - warm[k] for k in full)
    with pytest.raises(ValueError, match=r"warmup must be in \[0, 10\) batches, got 10"):
        _C.simulate_cache(3000, 0.1, 1.0, None, ids, offsets, warmup=10)


def test_tier_rates_from_engine_counters():
    from tiemb.gpu import with_tier_rates

    base = dict(rows_gpu=64, rows_host=500, rows_file=500, unique_ids=100, hits=60)
    # Zero-copy: host-tier misses read in place (host_hits); the host fetches only backing-file rows.
    zc = with_tier_rates(dict(base, host_hits=30, host_fetches=10, backing_reads=10))
    assert (zc["gpu_hit_rate"], zc["host_hit_rate"], zc["backing_hit_rate"]) == (0.6, 0.3, 0.1)
    # Copy mode: the host fetches host-tier and backing-file rows alike; backing_reads splits them.
    cp = with_tier_rates(dict(base, host_hits=0, host_fetches=40, backing_reads=10))
    assert (cp["gpu_hit_rate"], cp["host_hit_rate"], cp["backing_hit_rate"]) == (0.6, 0.3, 0.1)
    res = with_tier_rates(dict(rows_gpu=1000, rows_host=0, rows_file=0, unique_ids=0, hits=0, host_hits=0,
                               host_fetches=0, backing_reads=0))
    assert (res["gpu_hit_rate"], res["host_hit_rate"], res["backing_hit_rate"]) == (1.0, 0.0, 0.0)


def test_tier_config_policy_is_checked():
    import tiemb

    assert tiemb.TierConfig(0.2, policy="lru_admit").validate(100).policy == "lru_admit"
    with pytest.raises(ValueError, match="policy must be 'lru' or 'lru_admit', got 'lfu'"):
        tiemb.TierConfig(0.2, policy="lfu").validate(100)
