"""The id range check at its boundaries (issue 13 made it one min/max pass
with a detailed scan only for a failing batch): every mode accepts exactly
the ids TensorFlow accepts, and a batch with bad ids names the first one."""

import numpy as np
import pytest

import tiemb

ROWS = 6
# (mode, wrap_negative): the lowest valid id; safe mode prunes every id < 0.
LOWEST = {("plain", False): 0, ("safe", False): None, ("gather", False): 0, ("gather", True): -ROWS}


def _group(mode, wrap, id_dtype):
    table = np.arange(ROWS * 2, dtype=np.float32).reshape(ROWS, 2)
    engine = tiemb.EmbeddingEngine(max_batch_size=8, slot_num=1, max_nnz=1)
    t = engine.add_table(table)
    return engine.group([tiemb.Slot(t, "sum", mode, wrap_negative=wrap)]), table


def _lookup(group, mode, ids):
    if mode == "gather":
        return group.lookup([ids])[0]
    seg = np.arange(len(ids), dtype=np.int64)
    return group.lookup([ids], segment_ids=[seg], num_rows=[len(ids)] if mode == "safe" else None)[0]


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("mode,wrap", list(LOWEST))
def test_boundary_ids_accepted_as_tf_does(mode, wrap, id_dtype):
    group, table = _group(mode, wrap, id_dtype)
    lowest = LOWEST[(mode, wrap)]
    ids = np.array([ROWS - 1, 0, ROWS - 1, lowest if lowest is not None else -5], id_dtype)
    out = _lookup(group, mode, ids)
    want = np.take(table, ids, axis=0)        # numpy wraps negatives as Keras Embedding does
    if mode == "safe":
        want[ids < 0] = 0                     # pruned: the row is empty
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("id_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("mode,wrap", list(LOWEST))
def test_first_bad_id_is_named(mode, wrap, id_dtype):
    group, _ = _group(mode, wrap, id_dtype)
    lowest = LOWEST[(mode, wrap)]
    low = f"{lowest}" if lowest is not None else "0"
    # Too large, at index 2; a second bad id later must not be the one named.
    ids = np.array([0, 1, ROWS, ROWS + 3], id_dtype)
    with pytest.raises(ValueError, match=rf"slot 0: ids\[2\] = {ROWS} is out of range \[{low}, {ROWS}\)"):
        _lookup(group, mode, ids)
    if lowest is not None:   # too small, at index 1
        ids = np.array([0, lowest - 1, 1, lowest - 2], id_dtype)
        with pytest.raises(ValueError, match=rf"slot 0: ids\[1\] = {lowest - 1} is out of range \[{low}, {ROWS}\)"):
            _lookup(group, mode, ids)
