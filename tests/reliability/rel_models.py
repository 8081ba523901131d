"""Small models for the reliability tests, written the way outside code
writes them (tf.Module, SparseTensor lookups, a dense layer)."""

import numpy as np
import tensorflow as tf


def lookup_model(path, seed, vocab=50, dim=8):
    """ids [batch, 4] -> sum of their rows (embedding_lookup_sparse) -> dense [dim, 3]."""
    rng = np.random.default_rng(seed)
    module = tf.Module()
    module.table = tf.Variable(rng.standard_normal((vocab, dim)).astype(np.float32))
    module.kernel = tf.Variable(rng.standard_normal((dim, 3)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.int64, name="ids")])
    def serve(ids):
        sp = tf.sparse.from_dense(ids + 1)
        sp = tf.SparseTensor(sp.indices, sp.values - 1, sp.dense_shape)
        emb = tf.nn.embedding_lookup_sparse(module.table, sp, None, combiner="sum")
        return {"out": tf.matmul(emb, module.kernel)}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    return path


def feeds(seed=0, batch=16, vocab=50):
    return {"ids": np.random.default_rng(seed).integers(0, vocab, (batch, 4)).astype(np.int64)}


def serve(model, feed):
    fn = model.signatures["serving_default"]
    return {k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feed.items()}).items()}


def sparse_input_model(path, seed, vocab=30, dim=4, default_id=None):
    """A model taking SparseTensor pieces (indices, values, dense_shape), as a
    serving signature over tf.nn.safe_embedding_lookup_sparse, then a dense layer."""
    rng = np.random.default_rng(seed)
    module = tf.Module()
    module.table = tf.Variable(rng.standard_normal((vocab, dim)).astype(np.float32))
    module.kernel = tf.Variable(rng.standard_normal((dim, 2)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64, name="indices"),
                                  tf.TensorSpec([None], tf.int64, name="values"),
                                  tf.TensorSpec([2], tf.int64, name="dense_shape")])
    def serve(indices, values, dense_shape):
        sp = tf.SparseTensor(indices, values, dense_shape)
        emb = tf.nn.safe_embedding_lookup_sparse(module.table, sp, None, combiner="mean", default_id=default_id)
        return {"out": tf.matmul(emb, module.kernel)}

    tf.saved_model.save(module, path, signatures={"serving_default": serve})
    return path
