"""The optimize() pipeline's steps (issue 12): the model is loaded once, the
one graph runner agrees with TensorFlow, the report says what applies."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from tiemb import tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


class Pooled(tf.Module):
    """Outside code's way: a table variable, a gather on dense ids, a sum."""

    def __init__(self, seed):
        super().__init__()
        self.table = tf.Variable(np.random.default_rng(seed).standard_normal((100, 8)).astype(np.float32))
        self.w = tf.Variable(np.random.default_rng(seed + 1).standard_normal((8, 1)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int64, name="ids")])
    def serve(self, ids):
        pooled = tf.reduce_sum(tf.gather(self.table, ids), axis=1)
        return {"score": tf.matmul(pooled, self.w)}


@pytest.fixture
def saved(tmp_path, seed):
    path = str(tmp_path / "pooled")
    m = Pooled(seed % 1000)
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})
    return path


def test_saved_model_loaded_once_and_result_loaded_once(saved, tmp_path, monkeypatch):
    loads = []
    real_load = tf.saved_model.load

    def counting(path, *a, **kw):
        loads.append(str(path))
        return real_load(path, *a, **kw)

    monkeypatch.setattr(tf.saved_model, "load", counting)
    out = str(tmp_path / "opt")
    _, report = tiemb.optimize(saved, 0, 1, ["ids:int64(16*4)"], save_path=out, runs=3)
    assert loads == [saved, out], loads
    assert report.rewrite["replaced"] == 1


def test_cpu_report_says_what_applies(saved, tmp_path):
    rng = np.random.default_rng(3)
    batches = [{"ids": rng.integers(0, 100, (16, 4))} for _ in range(2)]
    _, report = tiemb.optimize(saved, 0, "cpu", ["ids:int64(16*4)"], test_data=batches,
                               save_path=str(tmp_path / "opt"), runs=3)
    cache = report.cache
    assert cache["hit_rate"].startswith("not applicable: CPU serving reads every row from host memory"), cache
    assert cache["simulated"]["batches"] == 2
    # Only backends that can run are tried; TF-TRT is not mentioned for a CPU target.
    dense = report.dense_backend
    tried = [r["name"] for r in dense["backend_results"]]
    assert "tf-trt" not in tried + [d["name"] for d in dense["dropped_backends"]]
    assert dense["dense_backend"] in tried
    # Facts about this run only: nothing about the machines tiemb was developed on.
    assert "no machine" not in str(report).lower() and "gpu_suite" not in str(report)


def test_graph_runner_agrees_with_tensorflow(saved):
    """tiemb.runner on the frozen signature against the SavedModel itself."""
    from tiemb.rewrite.saved_model import freeze_signature
    from tiemb.runner import feed_runner, graph_function

    sig = freeze_signature(saved)
    ids = np.random.default_rng(5).integers(0, 100, (7, 4))
    want = sig.fn(ids=tf.constant(ids))["score"].numpy()
    run = feed_runner(sig.graph_def, ["ids"], [sig.input_tensors["ids"]], [sig.outputs["score"]])
    np.testing.assert_array_equal(run({"ids": ids})[sig.outputs["score"]], want)
    fn = graph_function(sig.graph_def, [sig.input_tensors["ids"]], [sig.outputs["score"]], store="/unused")
    np.testing.assert_array_equal(fn(tf.constant(ids))[0].numpy(), want)


def test_frozen_graph_level1_backend_fallback(tmp_path, seed, monkeypatch):
    """A frozen graph at level 1: bfloat16 matmuls under TensorFlow's kernels
    when within the tolerance; beyond a stricter one they are dropped, named,
    and the float32 dense part is kept (one chooser: tiemb.backends.choose)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tiemb import backends

    rng = np.random.default_rng(seed)
    table = tf.Variable(rng.standard_normal((50, 64)).astype(np.float32))
    w = tf.Variable(rng.standard_normal((64, 32)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64, name="ids")])
    def f(ids):
        return tf.matmul(tf.reduce_sum(tf.gather(table, ids), 1), w, name="out")

    gd = convert_variables_to_constants_v2(f.get_concrete_function()).graph.as_graph_def()
    src = str(tmp_path / "model.pb")
    with open(src, "wb") as fh:
        fh.write(gd.SerializeToString())
    _, report = tiemb.optimize(src, 1, 1, ["32*3"], save_path=str(tmp_path / "a.pb"), runs=2)
    dense = report.dense_backend
    assert dense["dense_backend"] == "tensorflow" and any("bfloat16" in n for n in dense["notes"]), dense
    assert 0 < report.accuracy["max_rel_diff"] <= backends.TOLERANCE[1]
    bf16_diff = report.accuracy["max_rel_diff"]
    # A tolerance below what bfloat16 gives: TensorFlow's float32 kernels are kept.
    monkeypatch.setitem(backends.TOLERANCE, 1, bf16_diff / 4)
    _, report = tiemb.optimize(src, 1, 1, ["32*3"], save_path=str(tmp_path / "b.pb"), runs=2)
    dense = report.dense_backend
    assert dense["dense_backend"] == "tensorflow-fp32", dense
    assert [d["name"] for d in dense["dropped_backends"]] == ["tensorflow"]
    assert "beyond level 1's tolerance" in dense["dropped_backends"][0]["reason"]
    assert report.accuracy["max_rel_diff"] <= bf16_diff / 4
