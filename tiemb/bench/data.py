"""Synthetic categorical traffic with realistic skew."""

import numpy as np

from ..pipeline.test_data import zipf_ids

__all__ = ["zipf_ids", "fixed_nnz_slot"]


def fixed_nnz_slot(rng, vocab: int, batch: int, nnz: int, alpha: float):
    """ids and sorted segment ids for `batch` samples with exactly `nnz` ids each."""
    ids = zipf_ids(rng, vocab, batch * nnz, alpha)
    segment_ids = np.repeat(np.arange(batch, dtype=np.int64), nnz)
    return ids, segment_ids
