"""A Wide&Deep feature layer with padded multi-hot features, written the way
NVIDIA DeepLearningExamples' TF2 Wide&Deep writes it
(``trainer/model/layers.py``, ``_categorical_embedding_lookup``): one-hot
features gather column 0 of their ids, multi-hot ones gather the
``[batch, hotness]`` ids, mask ids < 0 (padding is -1), sum over the hotness
axis and, for mean, ``divide_no_nan`` by the valid count. Used by the
pooled-lookup tests and ``benchmarks/pooled_bench.py``."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def feature_layer(vocabs: Sequence[int], dims: Sequence[int], combiners: Sequence[str], *, clip: bool = False,
                  divide: bool = False):
    """The layer (a Keras Layer; call it on a list of [batch, k] id tensors).

    Args:
        vocabs, dims, combiners: per feature, table rows, dimension, "sum" or "mean".
        clip: gather ``max(ids, 0)`` instead of the ids (a CPU gather of -1
            fails in TensorFlow; NVIDIA runs on GPUs, where it reads zeros);
            the mask makes the row read for padding irrelevant.
        divide: divide by the count with a plain division instead of
            ``divide_no_nan`` (NaN for rows without ids).
    """
    import tensorflow as tf

    class NvidiaStyleFeatures(tf.keras.layers.Layer):
        def build(self, input_shape):
            self.tables = [self.add_weight(name=f"f{i}_embedding_weights", shape=(v, d), initializer="glorot_normal")
                           for i, (v, d) in enumerate(zip(vocabs, dims))]

        def lookup(self, table, x, combiner):
            if x.shape[1] > 1:
                embeddings = tf.gather(table, tf.maximum(x, 0) if clip else x)
                mask_array = tf.cast(x >= 0, embeddings.dtype)
                mask = tf.expand_dims(mask_array, -1)
                embeddings = tf.math.multiply(embeddings, mask)
                embeddings = tf.reduce_sum(embeddings, axis=1)
                if combiner == "mean":
                    row_lengths = tf.reduce_sum(mask_array, axis=1)
                    row_lengths = tf.cast(row_lengths, embeddings.dtype)
                    row_lengths = tf.expand_dims(row_lengths, -1)
                    embeddings = embeddings / row_lengths if divide else tf.math.divide_no_nan(embeddings,
                                                                                                row_lengths)
                return embeddings
            return tf.gather(table, x[:, 0])

        def call(self, inputs):
            return tf.concat([self.lookup(t, x, c) for t, x, c in zip(self.tables, inputs, combiners)], axis=1)

    return NvidiaStyleFeatures()


def padded_ids(rng: np.random.Generator, vocab: int, n: int, k: int, padding: float = 0.3) -> np.ndarray:
    """[n, k] int64 ids with -1 padding at the end of each row (NVIDIA's
    dataloader pads that way), some rows all padding when padding > 0."""
    x = rng.integers(0, vocab, (n, k))
    if padding:
        counts = rng.integers(0, k + 1, n)
        counts[rng.random(n) >= padding] = k
        x[np.arange(k)[None, :] >= counts[:, None]] = -1
    return x
