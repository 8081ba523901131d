"""Reference recommender models, built from code (no downloads), and their inputs.

* ``wide_deep``: Keras Wide&Deep shaped like NVIDIA's TF2 example: Criteo
  layout (13 numeric, 26 categorical), one ``Embedding`` per categorical
  feature on dense ids, a wide part of per-feature 1-dim embeddings summed, a
  deep tower of wide ``Dense`` layers. Idiom: row gathers (``GatherV2``).
* ``deepfm``: DeepFM shaped like DeepCTR's defaults (embedding dim 8, DNN
  256-128-64, FM second-order term), built as a TF1 graph with
  ``tf.compat.v1.feature_column`` (``embedding_column`` over
  ``categorical_column_with_identity``, a linear-model first-order part) and a
  multi-valued MovieLens-style "genres" feature with a mean combiner. Idiom:
  ``safe_embedding_lookup_sparse``; with ``control_flow_v1`` the id range
  asserts become ``Switch``/``Merge`` as in TF1 estimator exports.
* ``dlrm``: DLRM-style: bottom MLP over the numerics, 26 tables of dim 64,
  pairwise dot interaction, top MLP (Keras, dense ids).

Every model takes ``dense`` (float32 [batch, 13]) and ``cat`` (int64
[batch, 26], ids inside each feature's vocabulary; ``deepfm`` also accepts
-1 for "missing") and ``deepfm`` also ``genres`` (int64 [batch, GENRES_LEN],
padded with -1). Each is saved as a SavedModel with random but fixed weights.
"""

from __future__ import annotations

import csv
import os
import zlib
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import numpy as np

from .data import zipf_ids

NUM_DENSE = 13
NUM_CAT = 26
GENRES_LEN = 6
GENRES_VOCAB = 24

SCALES = {
    # vocabulary sizes of the 26 features: from thousands to millions of rows at "full"
    "tiny": [97, 1000, 50, 300] * 6 + [120, 60],
    "small": [1000, 20000, 500, 5000, 100000, 3000] * 4 + [800, 40000],
    "full": [10_000, 2_000_000, 50_000, 300_000, 1_000_000, 8_000] * 4 + [5_000, 500_000],
}


@dataclass
class ModelSpec:
    """What a reference model is and how to feed it."""

    name: str
    vocab: List[int]
    dim: int
    extra: Dict[str, object] = field(default_factory=dict)


def vocab_for(scale: str) -> List[int]:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    return list(SCALES[scale])


# --------------------------------------------------------------------------- inputs

def random_batch(spec: ModelSpec, batch: int, rng: np.random.Generator, alpha: float = 1.1,
                 missing: float = 0.0) -> Dict[str, np.ndarray]:
    """Inputs for ``spec``'s model: Zipf(alpha) ids per feature; a share
    ``missing`` of categorical values set to -1 (DeepFM only)."""
    cat = np.stack([zipf_ids(rng, v, batch, alpha) for v in spec.vocab], 1).astype(np.int64)
    feeds = {"dense": rng.random((batch, NUM_DENSE), dtype=np.float32), "cat": cat}
    if spec.name == "deepfm":
        if missing:
            cat[rng.random(cat.shape) < missing] = -1
        counts = rng.integers(0, GENRES_LEN + 1, batch)           # some samples without genres
        genres = np.full((batch, GENRES_LEN), -1, np.int64)
        for r, c in enumerate(counts):
            genres[r, :c] = np.sort(rng.choice(GENRES_VOCAB, c, replace=False))
        feeds["genres"] = genres
    return feeds


def _hash(s: str, buckets: int) -> int:
    return zlib.crc32(s.encode()) % buckets


DATA_DIR = os.path.join(os.path.dirname(__file__), "data")


def real_batch(spec: ModelSpec, data_dir: str = DATA_DIR) -> Dict[str, np.ndarray]:
    """The 200 real Criteo rows of ``data_dir/criteo_sample.txt``, numerics
    log-scaled, categories hashed into each vocabulary (empty ones are
    missing: -1 for DeepFM, id 0 otherwise), and for DeepFM the real MovieLens
    genres of ``movielens_sample.txt`` (row i gets movie row i's genres)."""
    with open(os.path.join(data_dir, "criteo_sample.txt"), newline="") as f:
        rows = list(csv.DictReader(f))
    dense = np.array([[np.log1p(max(float(r[f"I{i}"] or 0), 0.0)) for i in range(1, NUM_DENSE + 1)] for r in rows],
                     np.float32)
    empty = -1 if spec.name == "deepfm" else 0
    cat = np.array([[_hash(r[f"C{i}"], v) if r[f"C{i}"] else empty for i, v in zip(range(1, NUM_CAT + 1), spec.vocab)]
                    for r in rows], np.int64)
    feeds = {"dense": dense, "cat": cat}
    if spec.name == "deepfm":
        with open(os.path.join(data_dir, "movielens_sample.txt"), newline="") as f:
            movies = list(csv.DictReader(f))
        genres = np.full((len(rows), GENRES_LEN), -1, np.int64)
        for i in range(len(rows)):
            names = movies[i % len(movies)]["genres"].split("|")[:GENRES_LEN]
            genres[i, :len(names)] = sorted(_hash(g, GENRES_VOCAB) for g in names)
        feeds["genres"] = genres
    return feeds


def signature_specs(spec: ModelSpec):
    import tensorflow as tf

    specs = {"dense": tf.TensorSpec([None, NUM_DENSE], tf.float32, name="dense"),
             "cat": tf.TensorSpec([None, NUM_CAT], tf.int64, name="cat")}
    if spec.name == "deepfm":
        specs["genres"] = tf.TensorSpec([None, GENRES_LEN], tf.int64, name="genres")
    return specs


# --------------------------------------------------------------------------- Keras models

def _save_keras(model, spec: ModelSpec, path: str, output: str):
    import tensorflow as tf

    specs = signature_specs(spec)
    module = tf.Module()
    module.model = model

    @tf.function(input_signature=[specs])
    def serve(inputs):
        return {output: model(inputs)}

    module.serve = serve
    tf.saved_model.save(module, path, signatures={"serving_default": serve})


def wide_deep(path: str, vocab: Sequence[int], *, dim: int = 16, tower: Sequence[int] = (1024,) * 5,
              seed: int = 0) -> ModelSpec:
    """Saves the Keras Wide&Deep at ``path``; returns its spec."""
    import keras

    keras.utils.set_random_seed(seed)
    dense = keras.Input((NUM_DENSE,), name="dense", dtype="float32")
    cat = keras.Input((NUM_CAT,), name="cat", dtype="int64")
    deep, wide = [dense], []
    for i, v in enumerate(vocab):
        ids = cat[:, i]
        deep.append(keras.layers.Embedding(v, dim, name=f"emb_{i}")(ids))
        wide.append(keras.layers.Embedding(v, 1, name=f"wide_{i}")(ids))
    x = keras.layers.Concatenate()(deep)
    for k, width in enumerate(tower):
        x = keras.layers.Dense(width, activation="relu", name=f"deep_{k}")(x)
    logit = keras.layers.Dense(1, name="deep_out")(x) + keras.layers.Add()(wide) + \
        keras.layers.Dense(1, name="wide_dense")(dense)
    model = keras.Model({"dense": dense, "cat": cat}, keras.layers.Activation("sigmoid")(logit))
    spec = ModelSpec("wd", list(vocab), dim)
    _save_keras(model, spec, path, "prob")
    return spec


def dlrm(path: str, vocab: Sequence[int], *, dim: int = 64, bottom: Sequence[int] = (512, 256),
         top: Sequence[int] = (1024, 1024, 512, 256), seed: int = 0) -> ModelSpec:
    """Saves a DLRM-style model at ``path``; returns its spec."""
    import keras
    from keras import ops

    keras.utils.set_random_seed(seed)
    dense = keras.Input((NUM_DENSE,), name="dense", dtype="float32")
    cat = keras.Input((NUM_CAT,), name="cat", dtype="int64")
    x = dense
    for k, width in enumerate(list(bottom) + [dim]):
        x = keras.layers.Dense(width, activation="relu", name=f"bottom_{k}")(x)
    vectors = [x] + [keras.layers.Embedding(v, dim, name=f"emb_{i}")(cat[:, i]) for i, v in enumerate(vocab)]
    stacked = ops.stack(vectors, axis=1)                                   # [batch, 27, dim]
    dots = ops.matmul(stacked, ops.transpose(stacked, (0, 2, 1)))          # [batch, 27, 27]
    n = len(vectors)
    rows, cols = np.tril_indices(n, -1)
    flat = ops.reshape(dots, (-1, n * n))
    pairs = ops.take(flat, rows * n + cols, axis=1)
    y = keras.layers.Concatenate()([x, pairs])
    for k, width in enumerate(top):
        y = keras.layers.Dense(width, activation="relu", name=f"top_{k}")(y)
    model = keras.Model({"dense": dense, "cat": cat}, keras.layers.Dense(1, activation="sigmoid", name="out")(y))
    spec = ModelSpec("dlrm", list(vocab), dim)
    _save_keras(model, spec, path, "prob")
    return spec


# --------------------------------------------------------------------------- TF1 feature-column DeepFM

def _tf1_dense(x, width: int, name: str):
    import tensorflow as tf

    tf1 = tf.compat.v1
    with tf1.variable_scope(name):
        w = tf1.get_variable("kernel", [x.shape[-1], width], initializer=tf1.glorot_uniform_initializer())
        b = tf1.get_variable("bias", [width], initializer=tf1.random_normal_initializer(stddev=0.01))
    return tf.matmul(x, w) + b


def deepfm(path: str, vocab: Sequence[int], *, dim: int = 8, dnn: Sequence[int] = (256, 128, 64), seed: int = 0,
           control_flow_v1: bool = True) -> ModelSpec:
    """Saves the feature-column DeepFM (a TF1 graph, SavedModel v1) at ``path``."""
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_v2_toggles

    tf1 = tf.compat.v1
    fc = tf1.feature_column
    was_v2 = control_flow_v2_toggles.control_flow_v2_enabled()
    if control_flow_v1:
        control_flow_v2_toggles.disable_control_flow_v2()
    try:
        graph = tf.Graph()
        with graph.as_default():
            tf1.set_random_seed(seed)
            dense = tf1.placeholder(tf.float32, [None, NUM_DENSE], name="dense")
            cat = tf1.placeholder(tf.int64, [None, NUM_CAT], name="cat")
            # Rank left open, as parsed serving inputs often are: the feature
            # column then checks it at run time (Assert; Switch/Merge under TF1
            # control flow) and its safe lookup keeps its reshapes.
            genres = tf1.placeholder(tf.int64, None, name="genres")
            features = {f"C{i}": cat[:, i:i + 1] for i in range(NUM_CAT)}
            features["genres"] = genres
            columns = [fc.categorical_column_with_identity(f"C{i}", v) for i, v in enumerate(vocab)]
            genre_col = fc.categorical_column_with_identity("genres", GENRES_VOCAB)
            embedded = [fc.embedding_column(c, dim, combiner="sum") for c in columns] + \
                [fc.embedding_column(genre_col, dim, combiner="mean")]
            # Per-feature embeddings, [batch, features, dim].
            emb = tf.reshape(fc.input_layer(features, embedded), [-1, len(embedded), dim])
            # FM: first order from a linear model, second order 0.5 * ((sum v)^2 - sum v^2).
            first = fc.linear_model(features, columns + [genre_col])
            summed = tf.reduce_sum(emb, 1)
            second = 0.5 * tf.reduce_sum(summed * summed - tf.reduce_sum(emb * emb, 1), 1, keepdims=True)
            x = tf.concat([tf.reshape(emb, [-1, len(embedded) * dim]), dense], 1)
            for k, width in enumerate(dnn):
                x = tf.nn.relu(_tf1_dense(x, width, f"dnn_{k}"))
            logit = _tf1_dense(x, 1, "dnn_out") + first + second
            prob = tf.sigmoid(logit, name="prob")
            with tf1.Session(graph=graph) as sess:
                sess.run([tf1.global_variables_initializer(), tf1.tables_initializer()])
                builder = tf1.saved_model.Builder(path)
                sig = tf1.saved_model.predict_signature_def(
                    inputs={"dense": dense, "cat": cat, "genres": genres}, outputs={"prob": prob})
                builder.add_meta_graph_and_variables(sess, [tf1.saved_model.SERVING],
                                                     signature_def_map={"serving_default": sig})
                builder.save()
    finally:
        if control_flow_v1 and was_v2:
            control_flow_v2_toggles.enable_control_flow_v2()
    return ModelSpec("deepfm", list(vocab), dim)


BUILDERS = {"wd": wide_deep, "deepfm": deepfm, "dlrm": dlrm}
