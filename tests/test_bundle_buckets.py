"""Batch buckets of a bundle, from --batch, seed 000's input shapes, or the default."""

import pytest

from tiemb import parse_input_shapes
from tiemb.serving.export import buckets_from


def test_buckets():
    assert buckets_from([512, 1, 64, 64]) == [1, 64, 512]
    assert buckets_from() == [1, 64, 512, 4096]
    assert buckets_from(max_batch_size=100) == [1, 64]
    assert buckets_from([64, 512], max_batch_size=16) == [16]
    seperate = parse_input_shapes([{"seperate": ["1*26", "32*26", "256*26"], "int": True}])
    assert buckets_from(input_shapes=seperate) == [1, 32, 256]
    ranged = parse_input_shapes(["cat:int64(3*26,100*26)"])
    assert buckets_from(input_shapes=ranged) == [4, 8, 16, 32, 64, 100]
    with pytest.raises(ValueError, match="batch sizes must be positive"):
        buckets_from([0, 4])
