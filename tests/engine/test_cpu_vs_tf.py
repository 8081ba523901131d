"""The CPU engine against TensorFlow's own lookups on the same inputs."""

import itertools

import numpy as np
import pytest

import tiemb
from oracle import SlotCase, assert_matches_tf, foundation_grid, random_slot

pytest.importorskip("tensorflow")

TOL = {np.float32: 1e-6, np.float16: 1e-3}
MAX_BATCH, MAX_NNZ = 64, 5


def run_engine(cases, use_offsets=False, num_threads=0):
    engine = tiemb.EmbeddingEngine(MAX_BATCH, len(cases), MAX_NNZ, num_threads)
    slots = [tiemb.Slot(engine.add_table(c.table), c.combiner, c.mode, c.default_id) for c in cases]
    group = engine.group(slots)
    kw = dict(row_offsets=[c.row_offsets for c in cases]) if use_offsets \
        else dict(segment_ids=[c.segment_ids for c in cases],
                  num_rows=[c.num_rows if c.mode == "safe" else None for c in cases])
    return group.lookup([c.ids for c in cases], weights=[c.weights for c in cases], **kw)


def check(cases, seed, **kw):
    outs = run_engine(cases, **kw)
    for s, (got, case) in enumerate(zip(outs, cases)):
        assert_matches_tf(got, case, TOL[case.table.dtype.type],
                          f"seed {seed}, slot {s} ({case.combiner}, {case.mode}, "
                          f"weighted={case.weights is not None}, ids {case.ids.dtype}, "
                          f"table {case.table.dtype} {case.table.shape})")


@foundation_grid
def test_matches_tf(combiner, weighted, mode, id_dtype, table_dtype, dim, num_slots, seed):
    rng = np.random.default_rng(seed)
    cases = [random_slot(rng, dim=dim, table_dtype=table_dtype, id_dtype=id_dtype, combiner=combiner,
                         mode=mode, weighted=weighted, max_batch=MAX_BATCH, max_nnz=MAX_NNZ,
                         default_id=(mode == "safe" and rng.random() < 0.5))
             for _ in range(num_slots)]
    check(cases, seed)


def test_mixed_slots_in_one_call(seed):
    """26 slots that differ in everything, in one call, segment ids and offsets."""
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(26):
        mode = str(rng.choice(["plain", "safe"]))
        cases.append(random_slot(
            rng, dim=int(rng.choice([1, 3, 8, 16, 33, 128])),
            table_dtype=[np.float32, np.float16][rng.integers(2)],
            id_dtype=[np.int32, np.int64][rng.integers(2)],
            combiner=str(rng.choice(["sum", "mean", "sqrtn"])), mode=mode,
            weighted=bool(rng.random() < 0.5), max_batch=MAX_BATCH, max_nnz=MAX_NNZ,
            default_id=(mode == "safe" and rng.random() < 0.5)))
    check(cases, seed)
    check(cases, seed, use_offsets=True)
    check(cases, seed, num_threads=1)


# ---- the scenarios of TensorFlow's own kernel tests -------------------------

def _case(table, ids, segs, rows, combiner, mode, weights=None, default_id=None, id_dtype=np.int64):
    return SlotCase(table, combiner, mode, np.asarray(ids, id_dtype), np.asarray(segs, np.int64), rows,
                    None if weights is None else np.asarray(weights, np.float32), default_id)


COMBOS = list(itertools.product(["sum", "mean", "sqrtn"], ["plain", "safe"], [False, True],
                                [np.float32, np.float16]))


@pytest.mark.parametrize("combiner,mode,weighted,table_dtype", COMBOS)
def test_tf_kernel_scenarios(combiner, mode, weighted, table_dtype, seed):
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((12, 4)).astype(table_dtype)

    def w(*v):
        return list(v) if weighted else None

    cases = {
        "empty rows in the middle and at the end":
            _case(table, [1, 2, 3, 4], [0, 0, 3, 3], 6, combiner, mode, w(1.0, 2.0, 0.5, 1.5)),
        "a single id": _case(table, [7], [0], 1, combiner, mode, w(3.0)),
        "duplicate ids in a row":
            _case(table, [5, 5, 5, 2, 2], [0, 0, 0, 1, 1], 2, combiner, mode, w(1.0, 2.0, 3.0, 0.5, 0.5)),
        "weights zero and negative":
            _case(table, [1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 2, 2], 3, combiner, mode,
                  [0.0, 1.0, -1.0, 1.0, -2.0, 0.5] if weighted else None),
        "weights summing to zero":
            _case(table, [1, 2], [0, 0], 1, combiner, mode, [1.0, -1.0] if weighted else None),
    }
    if mode == "safe":
        cases["all ids of a row invalid"] = _case(table, [-1, -2, 3, -1], [0, 0, 1, 2], 4, combiner, mode,
                                                  w(1.0, 1.0, 2.0, 1.0))
        cases["default_id fills empty rows"] = _case(table, [-1, 3, 4], [0, 2, 2], 4, combiner, mode,
                                                     w(1.0, 2.0, 0.5), default_id=9)
        cases["weights zero and negative with default_id"] = _case(
            table, [1, 2, 3], [0, 1, 1], 3, combiner, mode, [0.0, -1.0, 2.0] if weighted else None,
            default_id=0)
        cases["no ids at all"] = _case(table, [], [], 3, combiner, mode, w())
        cases["no ids at all, default_id"] = _case(table, [], [], 2, combiner, mode, w(), default_id=4)
    else:
        cases["no ids at all"] = _case(table, [], [], 0, combiner, mode, w())
    for name, case in cases.items():
        for id_dtype in (np.int32, np.int64):
            case.ids = case.ids.astype(id_dtype)
            out = run_engine([case])[0]
            assert_matches_tf(out, case, TOL[table_dtype], f"{name} (seed {seed}, ids {id_dtype.__name__})")


def test_output_dtype_override(seed):
    """float16 tables can return float32 (and back), rounded from the fp32 accumulation."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((50, 8)).astype(np.float16)
    ids = rng.integers(0, 50, 30)
    segs = np.sort(rng.integers(0, 10, 30))
    engine = tiemb.EmbeddingEngine(16, 2, 8)
    t16 = engine.add_table(table)
    t32 = engine.add_table(table.astype(np.float32))
    g = engine.group([tiemb.Slot(t16, "mean", output_dtype="float32"),
                      tiemb.Slot(t32, "mean", output_dtype="float16")])
    a, b = g.lookup([ids, ids], segment_ids=[segs, segs])
    assert a.dtype == np.float32 and b.dtype == np.float16
    case = _case(table.astype(np.float32), ids, segs, int(segs[-1]) + 1, "mean", "plain")
    assert_matches_tf(a, case, 1e-6, f"fp16 table -> fp32 output (seed {seed})")
    np.testing.assert_array_equal(b, a.astype(np.float16))
