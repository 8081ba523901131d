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
