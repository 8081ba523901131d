"""What the tiered cache needs that runs without a GPU: sizing, validation,
warm-start order, and the backing table file format."""

import os

import numpy as np
import pytest

import tiemb
from tiemb import _C


@pytest.mark.parametrize("rows,cache,cpu,expect", [
    (1000, 1.0, 1.0, dict(resident=True, cache_sets=0, gpu_rows=1000, host_rows=0, file_rows=0)),
    (1000, 0.2, 1.0, dict(resident=False, cache_sets=7, gpu_rows=224, host_rows=1000, file_rows=0)),
    (1000, 0.2, 0.5, dict(resident=False, cache_sets=7, gpu_rows=224, host_rows=500, file_rows=500)),
    (1000, 0.001, 0.0, dict(resident=False, cache_sets=1, gpu_rows=32, host_rows=0, file_rows=1000)),
    (10, 0.99, 1.0, dict(resident=False, cache_sets=1, gpu_rows=32, host_rows=10, file_rows=0)),
    (5_000_000, 0.2, 1.0, dict(resident=False, cache_sets=31250, gpu_rows=1_000_000, host_rows=5_000_000,
                               file_rows=0)),
])
def test_tier_sizes(rows, cache, cpu, expect):
    assert _C.tier_sizes(rows, cache, cpu) == expect


@pytest.mark.parametrize("kw,msg", [
    (dict(cache_percentage=0.0), r"cache_percentage must be in \(0, 1\], got 0"),
    (dict(cache_percentage=1.5), r"cache_percentage must be in \(0, 1\], got 1.5"),
    (dict(cpu_cache_percentage=-0.1), r"cpu_cache_percentage must be in \[0, 1\], got -0.1"),
    (dict(hit_rate_threshold=2), r"hit_rate_threshold must be in \[0, 1\], got 2"),
    (dict(cache_percentage=0.2, cpu_cache_percentage=0.5),
     r"cpu_cache_percentage = 0.5 leaves 50 rows outside host memory, which needs a backing_file"),
    (dict(host_read="mmap"), r"host_read must be 'zero_copy' or 'copy', got 'mmap'"),
    (dict(cache_percentage="0.2"), r"cache_percentage must be a number, got '0.2'"),
])
def test_tier_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        tiemb.TierConfig(**kw).validate(100)


def test_tier_config_valid_with_backing_file(tmp_path):
    tiemb.TierConfig(0.2, 0.5, backing_file=str(tmp_path / "t.tiemb")).validate(100)


def test_hot_rows_order():
    profile = np.array([5, 3, 5, 7, 3, 5, 99, -1, 2], np.int64)
    # 5 (3x), 3 (2x), then 2 and 7 (1x, by id), then unseen rows by id; 99 and -1 are outside.
    assert _C.hot_rows(10, profile, 10) == [5, 3, 2, 7, 0, 1, 4, 6, 8, 9]
    assert _C.hot_rows(10, profile, 3) == [5, 3, 2]
    assert _C.hot_rows(4, np.zeros(0, np.int64), 2) == [0, 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_table_file_round_trip(tmp_path, dtype, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((37, 5)).astype(dtype)
    path = str(tmp_path / "t.tiemb")
    _C.write_table_file(path, table)
    assert os.path.getsize(path) == 64 + table.nbytes
    ids = [0, 36, 17, 17]
    rows, dim, name, got = _C.read_table_rows(path, ids)
    assert (rows, dim, name) == (37, 5, np.dtype(dtype).name)
    np.testing.assert_array_equal(got, table[ids])
    with open(path, "rb") as f:
        head = f.read(64)
    assert head[:8] == b"TIEMBTB1"
    assert int.from_bytes(head[8:12], "little") == 2
    assert int.from_bytes(head[16:24], "little") == 37 and int.from_bytes(head[24:32], "little") == 5


def test_table_file_errors(tmp_path):
    path = str(tmp_path / "t.tiemb")
    with pytest.raises(ValueError, match=r"table file .*t.tiemb: cannot open: No such file"):
        _C.read_table_rows(path, [0])
    open(path, "wb").write(b"short")
    with pytest.raises(ValueError, match=r"not a tiemb table file \(shorter than its header\)"):
        _C.read_table_rows(path, [0])
    open(path, "wb").write(b"X" * 100)
    with pytest.raises(ValueError, match=r"not a tiemb table file \(bad magic\)"):
        _C.read_table_rows(path, [0])
    _C.write_table_file(path, np.ones((4, 2), np.float32))
    with open(path, "ab") as f:
        f.write(bytes(4))
    with pytest.raises(ValueError, match=r"size 100 bytes does not match its header \(4 x 2 float32\)"):
        _C.read_table_rows(path, [0])
    _C.write_table_file(path, np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"row 4 is out of range \[0, 4\)"):
        _C.read_table_rows(path, [4])


def test_cpu_engine_matches_numpy_reference(seed):
    """The NumPy reference the GPU tests use agrees with the CPU engine (itself checked against TF)."""
    from oracle import assert_within_bound, numpy_lookup, random_slot

    rng = np.random.default_rng(seed)
    for combiner in ("sum", "mean", "sqrtn"):
        for mode in ("plain", "safe"):
            for weighted in (False, True):
                case = random_slot(rng, dim=8, table_dtype=np.float32, id_dtype=np.int64, combiner=combiner,
                                   mode=mode, weighted=weighted, default_id=(mode == "safe"))
                e = tiemb.EmbeddingEngine(64, 1, 5)
                g = e.group([tiemb.Slot(e.add_table(case.table), combiner, mode, case.default_id)])
                (out,) = g.lookup([case.ids], segment_ids=[case.segment_ids],
                                  num_rows=case.num_rows if mode == "safe" else None, weights=[case.weights])
                assert_within_bound(out, numpy_lookup(case), case, 1e-6, f"{combiner}/{mode}/w={weighted}")
