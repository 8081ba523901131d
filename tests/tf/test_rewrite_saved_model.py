"""SavedModel in, SavedModel out: served after moving it, in a fresh process."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tiemb import tf_ops  # noqa: E402
from tiemb.rewrite import rewrite_saved_model  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


class WideDeep(tf.Module):
    def __init__(self, rng):
        super().__init__()
        self.user = tf.Variable(rng.standard_normal((200, 8)).astype(np.float32))
        self.item = tf.Variable(rng.standard_normal((300, 8)).astype(np.float32))
        self.wide = tf.Variable(rng.standard_normal((300, 1)).astype(np.float32))
        self.w = tf.Variable(rng.standard_normal((16, 1)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="user_id"),
                                  tf.TensorSpec([None, 2], tf.int64, name="indices"),
                                  tf.TensorSpec([None], tf.int64, name="item_ids")])
    def serve(self, user_id, indices, item_ids):
        batch = tf.shape(user_id, out_type=tf.int64)[0]
        sp = tf.SparseTensor(indices, item_ids, [batch, 8])
        items = tf.nn.embedding_lookup_sparse(self.item, sp, None, combiner="mean")
        items = tf.pad(items, [[0, batch - tf.shape(items, out_type=tf.int64)[0]], [0, 0]])
        deep = tf.concat([tf.gather(self.user, user_id), items], 1)
        return {"score": tf.matmul(deep, self.w) + tf.gather(self.wide, user_id % 300)}


def serving_batch(rng, batch, min_items):
    """Inputs of WideDeep.serve: user ids, item sparse indices and ids (some rows empty when min_items is 0)."""
    user = rng.integers(0, 200, batch)
    counts = rng.integers(min_items, 4, batch)
    seg = np.repeat(np.arange(batch), counts)
    indices = np.stack([seg, np.concatenate([np.arange(c) for c in counts])], 1)
    return user, indices, rng.integers(0, 300, len(seg))


def test_saved_model_round_trip_moved_and_reloaded(tmp_path, seed):
    rng = np.random.default_rng(seed)
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    m = WideDeep(rng)
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    report = rewrite_saved_model(src, dst, max_batch_size=64, max_nnz=8)
    assert report.replaced == 3, report.as_dict()
    assert os.path.exists(os.path.join(dst, "assets", "store.json"))
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel()
    with open(os.path.join(dst, "saved_model.pb"), "rb") as f:
        sm.ParseFromString(f.read())
    lib = sm.meta_graphs[0].graph_def.library
    ops = {n.op for fn in lib.function for n in fn.node_def}
    assert "TiembLookup" in ops and not {"SparseSegmentMean", "GatherV2", "Unique"} & ops, sorted(ops)
    moved = str(tmp_path / "elsewhere" / "model")
    shutil.copytree(dst, moved)
    shutil.rmtree(dst)                       # the store must come with the copy
    user, indices, items = serving_batch(rng, 10, 0)
    want = m.serve(tf.constant(user), tf.constant(indices), tf.constant(items))["score"].numpy()
    code = ("import json, sys, numpy as np, tensorflow as tf, tiemb\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "a = json.loads(sys.argv[2])\n"
            "f = m.signatures['serving_default']\n"
            "out = f(user_id=tf.constant(a['u'], tf.int64), indices=tf.constant(a['i'], tf.int64),\n"
            "        item_ids=tf.constant(a['t'], tf.int64))['score'].numpy()\n"
            "print(json.dumps(out.tolist()))\n")
    args = json.dumps({"u": user.tolist(), "i": indices.reshape(-1, 2).tolist(), "t": items.tolist()})
    proc = subprocess.run([sys.executable, "-c", code, moved, args], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd="/")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = np.array(json.loads(proc.stdout.strip().splitlines()[-1]), np.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_saved_model_errors(tmp_path):
    with pytest.raises(ValueError, match=r"cannot load a SavedModel from .*nowhere"):
        rewrite_saved_model(str(tmp_path / "nowhere"), str(tmp_path / "out"), max_batch_size=8, max_nnz=1)
    m = tf.Module()
    m.f = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(m, str(tmp_path / "m"), signatures={"serving_default": m.f})
    with pytest.raises(ValueError, match=r"has no signature 'predict'; it has \['serving_default'\]"):
        rewrite_saved_model(str(tmp_path / "m"), str(tmp_path / "out"), max_batch_size=8, max_nnz=1,
                            signature="predict")
    os.makedirs(tmp_path / "full")
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match=r"exists and is not empty"):
        rewrite_saved_model(str(tmp_path / "m"), str(tmp_path / "full"), max_batch_size=8, max_nnz=1)
    # A model without lookups comes back working, with nothing replaced.
    report = rewrite_saved_model(str(tmp_path / "m"), str(tmp_path / "out"), max_batch_size=8, max_nnz=1)
    assert report.replaced == 0 and report.found == 0
    out = tf.saved_model.load(str(tmp_path / "out")).signatures["serving_default"](x=tf.constant([1.0, 2.0]))
    np.testing.assert_array_equal(out["y"].numpy(), [2.0, 4.0])


def test_frozen_graph_round_trip_moved(tmp_path, seed):
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from tiemb.rewrite import load_frozen_graph, rewrite_frozen_graph

    rng = np.random.default_rng(seed)
    m = WideDeep(rng)
    cf = convert_variables_to_constants_v2(m.serve.get_concrete_function())
    inputs, outputs = [t.name for t in cf.inputs], [t.name for t in cf.outputs]
    src, dst = str(tmp_path / "model.pb"), str(tmp_path / "out" / "model.pb")
    with open(src, "wb") as f:
        f.write(cf.graph.as_graph_def().SerializeToString())
    os.makedirs(tmp_path / "out")
    report = rewrite_frozen_graph(src, dst, max_batch_size=64, max_nnz=8)
    assert report.replaced == 3
    moved = str(tmp_path / "moved")
    shutil.move(str(tmp_path / "out"), moved)            # the .pb and its .store together
    user, indices, items = serving_batch(rng, 6, 1)
    want = m.serve(tf.constant(user), tf.constant(indices), tf.constant(items))["score"].numpy()
    fn = load_frozen_graph(os.path.join(moved, "model.pb"), inputs, outputs)
    got = fn(tf.constant(user), tf.constant(indices), tf.constant(items))[0].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"exists \(pass overwrite=True"):
        rewrite_frozen_graph(src, os.path.join(moved, "model.pb"), max_batch_size=64, max_nnz=8)
    (tmp_path / "junk.pb").write_bytes(b"not a graph")
    with pytest.raises(ValueError, match=r"cannot read a frozen GraphDef from .*junk.pb"):
        rewrite_frozen_graph(str(tmp_path / "junk.pb"), str(tmp_path / "x.pb"), max_batch_size=8, max_nnz=1)
    assert not os.path.exists(tmp_path / "x.pb") and not os.path.exists(tmp_path / "x.pb.store")
