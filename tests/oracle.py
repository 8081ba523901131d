"""Random slot inputs and TensorFlow as the reference for lookups.

TensorFlow is imported lazily so that engine tests that do not need it can
run without it.
"""

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass
class SlotCase:
    """One slot's table, settings and inputs, in the engine's terms."""

    table: np.ndarray            # rows x dim, float32 or float16
    combiner: str
    mode: str                    # plain | safe
    ids: np.ndarray              # int32 or int64
    segment_ids: np.ndarray      # int64, sorted
    num_rows: int                # dense_shape[0]
    weights: Optional[np.ndarray] = None   # float32 (values exactly representable in the table dtype)
    default_id: Optional[int] = None
    row_offsets: np.ndarray = field(default=None)

    def __post_init__(self):
        if self.row_offsets is None:
            counts = np.bincount(self.segment_ids, minlength=self.num_rows) if len(self.segment_ids) \
                else np.zeros(self.num_rows, np.int64)
            self.row_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def foundation_grid(test):
    """Every combination the foundation tests cover: combiner x weighted x
    row mode x id dtype x table dtype x dimension x slot count."""
    import pytest

    for deco in (pytest.mark.parametrize("num_slots", [1, 26]),
                 pytest.mark.parametrize("dim", [1, 4, 16, 128]),
                 pytest.mark.parametrize("table_dtype", [np.float32, np.float16], ids=["f32", "f16"]),
                 pytest.mark.parametrize("id_dtype", [np.int32, np.int64], ids=["i32", "i64"]),
                 pytest.mark.parametrize("mode", ["plain", "safe"]),
                 pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"]),
                 pytest.mark.parametrize("combiner", ["sum", "mean", "sqrtn"])):
        test = deco(test)
    return test


def random_slot(rng, *, dim, table_dtype, id_dtype, combiner, mode, weighted, max_batch=64,
                max_nnz=5, default_id=False, vocab=None):
    vocab = vocab or int(rng.integers(20, 1000))
    table = rng.standard_normal((vocab, dim)).astype(table_dtype)
    rows = int(rng.integers(1, max_batch + 1))
    # Some rows empty (middle and trailing), the rest 1..max_nnz ids.
    counts = rng.integers(1, max_nnz + 1, size=rows)
    counts[rng.random(rows) < 0.2] = 0
    segment_ids = np.repeat(np.arange(rows, dtype=np.int64), counts)
    n = len(segment_ids)
    ids = rng.integers(0, vocab, size=n)
    if mode == "safe":
        invalid = rng.random(n) < 0.15
        ids[invalid] = -rng.integers(1, 5, size=int(invalid.sum()))
    weights = None
    if weighted:
        weights = rng.uniform(0.1, 2.0, size=n).astype(table_dtype).astype(np.float32)
    return SlotCase(table, combiner, mode, ids.astype(id_dtype), segment_ids, rows, weights,
                    int(rng.integers(0, vocab)) if default_id else None)


def tf_lookup(case: SlotCase):
    """What TensorFlow computes for this slot (plain or safe)."""
    import tensorflow as tf

    n = len(case.ids)
    pos = np.arange(n) - case.row_offsets[case.segment_ids] if n else np.zeros(0, np.int64)
    indices = np.stack([case.segment_ids, pos], axis=1).astype(np.int64).reshape(n, 2)
    width = max(1, int(pos.max()) + 1) if n else 1
    shape = [case.num_rows, width]
    sp_ids = tf.SparseTensor(indices, tf.constant(case.ids), shape)
    sp_w = None
    if case.weights is not None:
        # safe_embedding_lookup_sparse converts the table to the weights' dtype.
        wdt = case.table.dtype if case.mode == "safe" else np.float32
        sp_w = tf.SparseTensor(indices, tf.constant(case.weights.astype(wdt)), shape)
    params = tf.constant(case.table)
    if case.mode == "plain":
        out = tf.nn.embedding_lookup_sparse(params, sp_ids, sp_w, combiner=case.combiner)
    else:
        out = tf.nn.safe_embedding_lookup_sparse(params, sp_ids, sp_w, combiner=case.combiner,
                                                 default_id=case.default_id)
    return out.numpy()


def rounding_bound(case: SlotCase, rows: int) -> np.ndarray:
    """Per-element scale of float rounding error for this slot's result.

    The error of a weighted sum is bounded by a multiple of sum(|w| |e|), and a
    mean's by the same over |sum(w)| plus the relative error of the
    denominator; computed in float64 from the ids that survive pruning.
    """
    dim = case.table.shape[1]
    tab = case.table.astype(np.float64)
    ids = case.ids.astype(np.int64)
    w = np.ones(len(ids)) if case.weights is None else case.weights.astype(np.float64)
    keep = np.ones(len(ids), bool)
    if case.mode == "safe":
        keep &= ids >= 0
        if case.weights is not None and case.combiner != "sum":
            keep &= w > 0
    seg = case.segment_ids[keep]
    ids, w = ids[keep], w[keep]
    abs_sum = np.zeros((rows, dim))
    np.add.at(abs_sum, seg, np.abs(w)[:, None] * np.abs(tab[ids]))
    wsum = np.bincount(seg, weights=w, minlength=rows)[:rows]
    wabs = np.bincount(seg, weights=np.abs(w), minlength=rows)[:rows]
    w2 = np.bincount(seg, weights=w * w, minlength=rows)[:rows]
    with np.errstate(divide="ignore", invalid="ignore"):
        if case.combiner == "sum":
            scale, denom_cond = np.ones(rows), np.zeros(rows)
        elif case.combiner == "mean":
            scale = np.where(wsum != 0, 1 / np.abs(wsum), 0)
            denom_cond = wabs * scale
        else:
            scale = np.where(w2 > 0, 1 / np.sqrt(w2), 0)
            denom_cond = np.ones(rows)
    bound = abs_sum * scale[:, None]
    if case.mode == "safe" and case.default_id is not None:
        empty = np.bincount(seg, minlength=rows)[:rows] == 0
        bound[empty] = np.abs(tab[case.default_id])
    return bound, denom_cond


def numpy_lookup(case: SlotCase) -> np.ndarray:
    """The lookup in float64 NumPy, written from TensorFlow's documented semantics."""
    tab = case.table.astype(np.float64)
    ids = case.ids.astype(np.int64)
    n = len(ids)
    rows = case.num_rows if case.mode == "safe" else (int(case.segment_ids[-1]) + 1 if n else 0)
    w = np.ones(n) if case.weights is None else case.weights.astype(np.float64)
    keep = np.ones(n, bool)
    if case.mode == "safe":
        keep &= ids >= 0
        if case.weights is not None and case.combiner != "sum":
            keep &= w > 0
    seg, ids, w = case.segment_ids[keep], ids[keep], w[keep]
    acc = np.zeros((rows, tab.shape[1]))
    np.add.at(acc, seg, w[:, None] * tab[ids])
    cnt = np.bincount(seg, minlength=rows)[:rows]
    wsum = np.bincount(seg, weights=w, minlength=rows)[:rows]
    w2 = np.bincount(seg, weights=w * w, minlength=rows)[:rows]
    if case.combiner == "mean":
        denom = wsum if case.weights is not None else cnt.astype(np.float64)
    elif case.combiner == "sqrtn":
        denom = np.sqrt(w2 if case.weights is not None else cnt.astype(np.float64))
    else:
        denom = np.ones(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(denom[:, None] != 0, acc / denom[:, None], 0.0)
    if case.mode == "safe" and case.default_id is not None:
        out[cnt == 0] = tab[case.default_id]
    return out


def assert_within_bound(got, ref, case: SlotCase, tol: float, where: str):
    """|got - ref| within tol times the float rounding scale of each element."""
    assert got.shape == ref.shape, f"{where}: shape {got.shape} != reference {ref.shape}"
    g, r = got.astype(np.float64), ref.astype(np.float64)
    bound, denom_cond = rounding_bound(case, ref.shape[0])
    # Plus half an ULP of the output format at the reference's magnitude:
    # rounding into float16 has an absolute floor in its subnormal range.
    ulp = np.spacing(np.abs(r).astype(got.dtype)).astype(np.float64) / 2
    allowed = tol * (bound + np.abs(r) * (1 + denom_cond[:, None])) + ulp
    bad = np.abs(g - r) > allowed
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{where}: {int(bad.sum())} of {bad.size} elements differ from the reference beyond tol {tol}; "
            f"first at {i}: got {g[i]!r} vs reference {r[i]!r} (allowed {allowed[i]:.3g})")


def assert_matches_tf(got, case: SlotCase, tol: float, where: str):
    ref = tf_lookup(case)
    assert got.dtype == ref.dtype, f"{where}: dtype {got.dtype} != TF {ref.dtype}"
    assert_within_bound(got, ref, case, tol, where + " (vs TensorFlow)")
