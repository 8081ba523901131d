"""pytest-benchmark suite: the W&D-like embedding layer, TensorFlow vs tiemb.

Run: pytest benchmarks/ --benchmark-only
"""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pytest.importorskip("tensorflow")

from tiemb.bench.embedding import EmbeddingCase, EmbeddingLayerPair  # noqa: E402

_pairs = {}


def pair_for(nnz):
    if nnz not in _pairs:
        _pairs[nnz] = EmbeddingLayerPair(EmbeddingCase(nnz=nnz))
        assert _pairs[nnz].max_abs_difference() < 1e-5
    return _pairs[nnz]


@pytest.mark.parametrize("nnz", [1, 10])
@pytest.mark.parametrize("side", ["tf", "tiemb"])
def test_wd_embedding_layer(benchmark, record_median, side, nnz):
    pair = pair_for(nnz)
    benchmark.group = f"W&D embedding layer, batch 512, 26 slots, dim 16, nnz {nnz}"
    benchmark.pedantic(pair.run_tf if side == "tf" else pair.run_tiemb, rounds=200, warmup_rounds=20)
    record_median(f"nnz {nnz}", side, benchmark)
