"""Random bad serving inputs: the optimized model refuses what the original
refuses and answers what it answers, with the same numbers (issue 11)."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from rel_models import sparse_input_model  # noqa: E402
from seed import seed_config  # noqa: E402
from tiemb import tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

VOCAB = 30


def _good(rng):
    rows = int(rng.integers(1, 6))
    cells = sorted({(int(r), int(c)) for r, c in zip(rng.integers(0, rows, 8), rng.integers(0, 3, 8))})
    return {"indices": np.array(cells, np.int64).reshape(-1, 2),
            "values": rng.integers(0, VOCAB, len(cells)).astype(np.int64),
            "dense_shape": np.array([rows, 3], np.int64)}


def _bad(rng):
    """A good input spoiled one random way (or left good)."""
    f = _good(rng)
    how = rng.choice(["rank3", "rank1", "id_high", "id_negative", "row_beyond", "fewer_rows", "good"])
    if how == "rank3":
        f["dense_shape"] = np.array([f["dense_shape"][0], 3, int(rng.integers(1, 4))], np.int64)
    elif how == "rank1":
        f["dense_shape"] = f["dense_shape"][:1]
    elif how == "id_high":
        f["values"][int(rng.integers(0, len(f["values"])))] = VOCAB + int(rng.integers(0, 5))
    elif how == "id_negative":   # the safe lookup prunes negative ids: an answer, not an error
        f["values"][int(rng.integers(0, len(f["values"])))] = -int(rng.integers(1, 5))
    elif how == "row_beyond":
        f["indices"][-1, 0] = f["dense_shape"][0] + int(rng.integers(0, 3))
    elif how == "fewer_rows":
        f["dense_shape"][0] = max(int(f["indices"][:, 0].max()), 0)
    return str(how), f


def _call(fn, feed):
    try:
        return fn(**{k: tf.constant(v) for k, v in feed.items()})["out"].numpy()
    except tf.errors.InvalidArgumentError as e:
        return e


@pytest.mark.parametrize("default_id", [None, 0])
def test_random_bad_inputs_match_the_original(tmp_path, seed, default_id):
    rng = np.random.default_rng(seed)
    src = sparse_input_model(str(tmp_path / "m"), seed % 1000, VOCAB, default_id=default_id)
    feed = _good(rng)
    # The serving engineer's sizes: batches of up to 5 samples, 3 ids each, one feature.
    tiemb.optimize(src, 0, 1, ["2", "8*2", "8"], test_data=[feed], save_path=str(tmp_path / "o"), runs=2,
                   optimization_config=seed_config(5, 1, 3))
    original = tf.saved_model.load(src).signatures["serving_default"]
    optimized = tf.saved_model.load(str(tmp_path / "o")).signatures["serving_default"]
    for k in range(40):
        how, feed = _bad(rng)
        want, got = _call(original, feed), _call(optimized, feed)
        case = f"case {k} ({how}): {feed}"
        if isinstance(want, Exception):
            assert isinstance(got, Exception), f"{case}: the original refuses ({want.message[:200]}), tiemb answers"
        else:
            assert not isinstance(got, Exception), f"{case}: the original answers, tiemb refuses: {got.message[:300]}"
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=case)
