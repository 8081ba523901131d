"""Bad input raises ValueError naming the slot and the problem, before any output is written."""

import numpy as np
import pytest

import tiemb


@pytest.fixture
def group():
    engine = tiemb.EmbeddingEngine(max_batch_size=4, slot_num=3, max_nnz=2)
    t0 = engine.add_table(np.ones((10, 4), np.float32))
    t1 = engine.add_table(np.ones((5, 2), np.float16))
    return engine.group([tiemb.Slot(t0, "sum"), tiemb.Slot(t1, "mean", mode="safe")])


def ok_inputs():
    ids = [np.array([1, 2, 3], np.int64), np.array([0, 4], np.int32)]
    segs = [np.array([0, 0, 1], np.int64), np.array([0, 2], np.int64)]
    return ids, segs


def lookup(group, ids, segs, **kw):
    kw.setdefault("num_rows", [None, 3])
    return group.lookup(ids, segment_ids=segs, **kw)


def test_valid_inputs_work(group):
    a, b = lookup(group, *ok_inputs())
    assert a.shape == (2, 4) and b.shape == (3, 2)


@pytest.mark.parametrize("bad_id,slot,msg", [
    (10, 0, r"slot 0: ids\[1\] = 10 is out of range \[0, 10\) of table 0"),
    (-1, 0, r"slot 0: ids\[1\] = -1 is out of range \[0, 10\) of table 0"),
    (5, 1, r"slot 1: ids\[1\] = 5 is out of range \[0, 5\) of table 1"),
])
def test_id_out_of_range(group, bad_id, slot, msg):
    ids, segs = ok_inputs()
    ids[slot] = ids[slot].copy()
    ids[slot][1] = bad_id
    with pytest.raises(ValueError, match=msg):
        lookup(group, ids, segs)


def test_negative_id_is_pruned_in_safe_mode(group):
    ids, segs = ok_inputs()
    ids[1] = np.array([-3, 4], np.int32)
    _, b = lookup(group, ids, segs)
    np.testing.assert_array_equal(b[0], 0)


def test_unsorted_segment_ids(group):
    ids, segs = ok_inputs()
    segs[0] = np.array([1, 0, 1], np.int64)
    with pytest.raises(ValueError, match=r"slot 0: segment_ids must be sorted, but segment_ids\[1\] = 0 < "
                                         r"segment_ids\[0\] = 1"):
        lookup(group, ids, segs)


def test_negative_segment_ids(group):
    ids, segs = ok_inputs()
    segs[1] = np.array([-1, 2], np.int64)
    with pytest.raises(ValueError, match=r"slot 1: segment_ids\[0\] = -1 is negative"):
        lookup(group, ids, segs)


def test_segment_id_beyond_num_rows(group):
    ids, segs = ok_inputs()
    with pytest.raises(ValueError, match=r"slot 1: segment_ids\[1\] = 2 is out of range for num_rows = 2"):
        lookup(group, ids, segs, num_rows=[None, 2])


def test_safe_mode_needs_num_rows(group):
    with pytest.raises(ValueError, match=r"slot 1: safe mode with segment_ids needs num_rows"):
        lookup(group, *ok_inputs(), num_rows=None)


def test_plain_mode_rejects_num_rows(group):
    with pytest.raises(ValueError, match=r"slot 0: num_rows is only accepted in safe mode"):
        lookup(group, *ok_inputs(), num_rows=[5, 3])


def test_ids_segments_length_mismatch(group):
    ids, segs = ok_inputs()
    segs[0] = np.array([0, 0], np.int64)
    with pytest.raises(ValueError, match=r"slot 0: segment_ids has 2 entries but ids has 3"):
        lookup(group, ids, segs)


def test_ids_weights_length_mismatch(group):
    ids, segs = ok_inputs()
    with pytest.raises(ValueError, match=r"slot 1: weights has 3 entries but ids has 2"):
        lookup(group, ids, segs, weights=[None, np.ones(3, np.float32)])


def test_too_many_ids(group):
    ids = [np.zeros(9, np.int64), np.array([0], np.int32)]
    segs = [np.repeat(np.arange(3), 3).astype(np.int64), np.array([0], np.int64)]
    with pytest.raises(ValueError, match=r"slot 0: 9 ids exceed max_batch_size \* max_nnz = 4 \* 2 = 8"):
        lookup(group, ids, segs)


def test_too_many_ids_in_one_sample(group):
    # max_nnz = 2: sample 1 of slot 0 has 3 ids, though the slot's 4 ids fit max_batch_size * max_nnz.
    ids = [np.zeros(4, np.int64), np.array([0], np.int32)]
    segs = [np.array([0, 1, 1, 1], np.int64), np.array([0], np.int64)]
    with pytest.raises(ValueError, match=r"slot 0: sample 1 has 3 ids, more than max_nnz = 2"):
        lookup(group, ids, segs)
    with pytest.raises(ValueError, match=r"slot 0: sample 1 has 3 ids, more than max_nnz = 2"):
        group.lookup(ids, row_offsets=[np.array([0, 1, 4], np.int64), np.array([0, 1], np.int64)])
    segs[0] = np.array([0, 1, 1, 2], np.int64)       # two ids per sample at most: fine
    a, _ = lookup(group, ids, segs)
    assert a.shape[0] == 3


def test_too_many_rows(group):
    ids, segs = ok_inputs()
    segs[0] = np.array([0, 0, 4], np.int64)
    with pytest.raises(ValueError, match=r"slot 0: 5 output rows exceed max_batch_size = 4"):
        lookup(group, ids, segs)
    with pytest.raises(ValueError, match=r"slot 1: 7 output rows exceed max_batch_size = 4"):
        lookup(group, *ok_inputs(), num_rows=[None, 7])


@pytest.mark.parametrize("which,arr,msg", [
    ("ids", np.array([1.0, 2.0, 3.0]), r"slot 0: ids must be int32 or int64, got float64"),
    ("ids", np.array([1, 2, 3], np.uint64), r"slot 0: ids must be int32 or int64, got uint64"),
    ("ids", np.array([[1, 2, 3]], np.int64), r"slot 0: ids must be 1-D, got 2-D"),
    ("ids", np.arange(6, dtype=np.int64)[::2], r"slot 0: ids must be C-contiguous"),
    ("ids", [1, 2, 3], r"slot 0: ids must be a numpy array, got <class 'list'>"),
    ("segs", np.array([0, 0, 1], np.int16), r"slot 0: segment_ids must be int32 or int64, got int16"),
    ("segs", np.array([0, 9, 0, 9, 1, 9], np.int64)[::2], r"slot 0: segment_ids must be C-contiguous"),
    ("weights", np.ones(3), r"slot 0: weights must be float32, got float64"),
    ("weights", np.ones(6, np.float32)[::2], r"slot 0: weights must be C-contiguous"),
])
def test_wrong_dtype_or_layout(group, which, arr, msg):
    ids, segs = ok_inputs()
    weights = [None, None]
    {"ids": ids, "segs": segs, "weights": weights}[which][0] = arr
    with pytest.raises(ValueError, match=msg):
        lookup(group, ids, segs, weights=weights)


def test_wrong_number_of_slots(group):
    ids, segs = ok_inputs()
    with pytest.raises(ValueError, match=r"lookup got ids for 1 slots but the group has 2"):
        lookup(group, ids[:1], segs[:1], num_rows=[None])


def test_row_offsets_checks():
    engine = tiemb.EmbeddingEngine(4, 1, 2)
    g = engine.group([tiemb.Slot(engine.add_table(np.ones((10, 2), np.float32)), "sum")])
    ids = np.array([1, 2, 3], np.int64)
    cases = [
        (np.array([1, 2, 3], np.int64), r"slot 0: row_offsets\[0\] must be 0, got 1"),
        (np.array([0, 2, 1, 3], np.int64), r"slot 0: row_offsets must be non-decreasing, but row_offsets\[2\] = 1"),
        (np.array([0, 2, 2], np.int64), r"slot 0: row_offsets ends at 2 but ids has 3 entries"),
        (np.array([0, 1, 1, 2, 3, 3], np.int64), r"slot 0: row_offsets describes 5 rows, more than max_batch_size = 4"),
        (np.zeros(0, np.int64), r"slot 0: row_offsets needs at least one entry"),
    ]
    for offsets, msg in cases:
        with pytest.raises(ValueError, match=msg):
            g.lookup([ids], row_offsets=[offsets])
    # plain mode drops trailing empty rows, as tf.nn.embedding_lookup_sparse does
    (out,) = g.lookup([ids], row_offsets=[np.array([0, 1, 3, 3, 3], np.int64)])
    assert out.shape == (2, 2)


def test_bad_config_and_tables():
    with pytest.raises(ValueError, match=r"max_batch_size must be a positive int, got 0"):
        tiemb.EmbeddingEngine(0, 1, 1)
    with pytest.raises(ValueError, match=r"max_nnz must be a positive int, got -3"):
        tiemb.EmbeddingEngine(1, 1, -3)
    with pytest.raises(ValueError, match=r"num_threads must be an int >= 0"):
        tiemb.EmbeddingEngine(1, 1, 1, num_threads=-1)
    engine = tiemb.EmbeddingEngine(4, 1, 2)
    with pytest.raises(ValueError, match=r"table must be float32 or float16, got float64"):
        engine.add_table(np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"table must be 2-D \(rows x dim\), got 1-D"):
        engine.add_table(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"table must have at least one row, got 0"):
        engine.add_table(np.ones((0, 2), np.float32))
    with pytest.raises(ValueError, match=r"table must be C-contiguous"):
        engine.add_table(np.ones((4, 4), np.float32)[:, ::2])
    t = engine.add_table(np.ones((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"slot 0: combiner must be one of \['mean', 'sqrtn', 'sum'\], got 'max'"):
        engine.group([tiemb.Slot(t, "max")])
    with pytest.raises(ValueError, match=r"slot 0: default_id is only meaningful in safe mode"):
        engine.group([tiemb.Slot(t, "sum", default_id=1)])
    with pytest.raises(ValueError, match=r"slot 0: default_id 3 is out of range \[0, 3\) of table 0"):
        engine.group([tiemb.Slot(t, "sum", mode="safe", default_id=3)])
    with pytest.raises(ValueError, match=r"slot 0: table id 7 does not exist \(engine has 1 tables\)"):
        engine.group([tiemb.Slot(7, "sum")])
    with pytest.raises(ValueError, match=r"a lookup group reads 2 features \(distinct id inputs\), more than slot_num = 1"):
        engine.group([tiemb.Slot(t, "sum"), tiemb.Slot(t, "sum")])
    with pytest.raises(ValueError, match=r"slot 1: feature must be an int >= 0 or None, got -2"):
        engine.group([tiemb.Slot(t, "sum"), tiemb.Slot(t, "sum", feature=-2)])
    # Two tables looked up with the same ids are one feature: slot_num counts features, not lookups.
    engine.group([tiemb.Slot(t, "sum", feature=0), tiemb.Slot(t, "mean", feature=0)])
    with pytest.raises(ValueError, match=r"tables must be added before the first lookup group is created"):
        engine.add_table(np.ones((3, 2), np.float32))


def test_error_leaves_group_usable(group):
    ids, segs = ok_inputs()
    bad = [ids[0], np.array([0, 99], np.int32)]
    with pytest.raises(ValueError):
        lookup(group, bad, segs)
    a, b = lookup(group, ids, segs)
    assert a.shape == (2, 4) and b.shape == (3, 2)
