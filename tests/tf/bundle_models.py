"""Models the bundle tests export: the reference models at tiny scale, and a
``tf.nn.embedding_lookup_sparse`` model taking SparseTensor pieces (written
the way outside code writes it: a tf.Module with a signature)."""

import os

import numpy as np

from tiemb.bench import models

VOCAB = models.vocab_for("tiny")
TOWERS = {"wd": {"dim": 8, "tower": (64, 32)}, "deepfm": {"dim": 8, "dnn": (32, 16)},
          "dlrm": {"dim": 8, "bottom": (16,), "top": (16, 8)}}
BUILDERS = {"wide_deep": "wd", "deepfm": "deepfm", "dlrm": "dlrm"}


def reference(name, path, seed):
    """(ModelSpec, feeds(n, rng)) of reference model ``name`` saved at ``path``."""
    key = BUILDERS[name]
    spec = models.BUILDERS[key](path, VOCAB, seed=seed, **TOWERS[key])
    missing = 0.1 if key == "deepfm" else 0.0
    return spec, lambda n, rng: models.random_batch(spec, n, rng, missing=missing)


SPARSE_ROWS, SPARSE_DIM = 50, 4


def sparse_model(path, seed):
    """embedding_lookup_sparse(mean) over SparseTensor pieces + a dense
    feature, then a Dense layer: feeds ids [nnz], indices [nnz, 2],
    dense_shape [2], x [batch, 3]."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)

    class Model(tf.Module):
        def __init__(self):
            self.table = tf.Variable(rng.standard_normal((SPARSE_ROWS, SPARSE_DIM)).astype(np.float32))
            self.w = tf.Variable(rng.standard_normal((SPARSE_DIM + 3, 2)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="ids"),
                                      tf.TensorSpec([None, 2], tf.int64, name="indices"),
                                      tf.TensorSpec([2], tf.int64, name="dense_shape"),
                                      tf.TensorSpec([None, 3], tf.float32, name="x")])
        def serve(self, ids, indices, dense_shape, x):
            sp = tf.SparseTensor(indices, ids, dense_shape)
            emb = tf.nn.embedding_lookup_sparse(self.table, sp, None, combiner="mean")
            return {"logits": tf.matmul(tf.concat([emb, x], 1), self.w)}

    m = Model()
    tf.saved_model.save(m, path, signatures={"serving_default": m.serve})

    def feeds(n, rng):
        # Every sample has 1..3 ids (embedding_lookup_sparse drops trailing empty rows).
        counts = rng.integers(1, 4, n)
        rows = np.repeat(np.arange(n), counts)
        cols = np.concatenate([np.arange(c) for c in counts])
        return {"ids": rng.integers(0, SPARSE_ROWS, rows.size).astype(np.int64),
                "indices": np.stack([rows, cols], 1).astype(np.int64),
                "dense_shape": np.array([n, 3], np.int64), "x": rng.random((n, 3), dtype=np.float32)}

    return feeds


def deepctr(kind, path, seed):
    """deepctr's DeepFM / WDL saved at ``path`` (built in its own process)."""
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "deepctr_models.py")
    proc = subprocess.run([sys.executable, script, kind, path, str(seed % 1000)], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    vocab = [97, 1000, 50, 300, 120, 60]

    def feeds(n, rng):
        f = {f"C{i}": rng.integers(0, v, (n, 1)).astype(np.int32) for i, v in enumerate(vocab)}
        genres = np.zeros((n, 6), np.int32)
        for r, c in enumerate(rng.integers(0, 7, n)):
            genres[r, :c] = rng.integers(1, 25, c)
        f["genres"] = genres
        f.update({f"I{i}": rng.random((n, 1), dtype=np.float32) for i in range(3)})
        return f

    return feeds
