"""Synthetic categorical traffic with realistic skew."""

import numpy as np


def zipf_ids(rng: np.random.Generator, vocab: int, size: int, alpha: float = 1.1) -> np.ndarray:
    """Ids in [0, vocab) drawn from Zipf(alpha) over ranks, hot ids spread over the table.

    numpy's own zipf has unbounded support; this samples the finite
    distribution p(rank k) ~ k^-alpha, then maps ranks to ids through a fixed
    random permutation so that hot rows are not simply the first rows.
    """
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -alpha
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(size), side="right")
    perm = np.random.default_rng(vocab).permutation(vocab)
    return perm[np.minimum(ranks, vocab - 1)].astype(np.int64)


def fixed_nnz_slot(rng, vocab: int, batch: int, nnz: int, alpha: float):
    """ids and sorted segment ids for `batch` samples with exactly `nnz` ids each."""
    ids = zipf_ids(rng, vocab, batch * nnz, alpha)
    segment_ids = np.repeat(np.arange(batch, dtype=np.int64), nnz)
    return ids, segment_ids
