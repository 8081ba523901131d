"""Builds and saves a deepctr model (run as a script, in its own process:
deepctr is written against the Keras 2 API that TensorFlow 2.21 only has
through tf-keras).

    python deepctr_models.py {deepfm|wdl|deepfm_len} OUT_DIR SEED

deepfm_len: DeepFM whose genres carry their length in an input of their own
(VarLenSparseFeat with length_name, sum and mean poolings masked by position).

deepctr 0.9.3 imports a few layers (LSTM, ...) from
``tensorflow.python.keras.layers``, which TensorFlow 2.21 no longer
defines; they are taken from tf_keras so that the import succeeds. DeepFM and
WDL use none of them.
"""

import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
import tensorflow.python.keras.layers as legacy_layers  # noqa: E402

for _name in dir(tf_keras.layers):
    if not _name.startswith("_") and not hasattr(legacy_layers, _name):
        setattr(legacy_layers, _name, getattr(tf_keras.layers, _name))

from deepctr.feature_column import DenseFeat, SparseFeat, VarLenSparseFeat  # noqa: E402
from deepctr.models import WDL, DeepFM  # noqa: E402

VOCAB = [97, 1000, 50, 300, 120, 60]
GENRES, MAXLEN = 24, 6


def features():
    sparse = [SparseFeat(f"C{i}", v, embedding_dim=8) for i, v in enumerate(VOCAB)]
    genres = [VarLenSparseFeat(SparseFeat("genres", GENRES + 1, embedding_dim=8), maxlen=MAXLEN, combiner="mean")]
    dense = [DenseFeat(f"I{i}", 1) for i in range(3)]
    return sparse, genres, dense


def main(kind, out, seed):
    tf.random.set_seed(seed)
    sparse, genres, dense = features()
    if kind == "deepfm_len":
        genres = [VarLenSparseFeat(SparseFeat("genres", GENRES + 1, embedding_dim=8), maxlen=MAXLEN, combiner=c,
                                   length_name="genres_len") for c in ("mean",)] + \
            [VarLenSparseFeat(SparseFeat("genres2", GENRES + 1, embedding_dim=8, embedding_name="genres2"),
                              maxlen=MAXLEN, combiner="sum", length_name="genres_len")]
        model = DeepFM(sparse + genres + dense, sparse + genres + dense, task="binary", seed=seed)
    elif kind == "deepfm":
        model = DeepFM(sparse + genres + dense, sparse + genres + dense, task="binary", seed=seed)
    else:
        model = WDL(sparse + dense, sparse + genres + dense, task="binary", seed=seed)
    specs = {f"C{i}": tf.TensorSpec([None, 1], tf.int32, name=f"C{i}") for i in range(len(VOCAB))}
    specs["genres"] = tf.TensorSpec([None, MAXLEN], tf.int32, name="genres")
    if kind == "deepfm_len":
        specs["genres2"] = tf.TensorSpec([None, MAXLEN], tf.int32, name="genres2")
        specs["genres_len"] = tf.TensorSpec([None, 1], tf.int32, name="genres_len")
    specs.update({f"I{i}": tf.TensorSpec([None, 1], tf.float32, name=f"I{i}") for i in range(3)})

    @tf.function(input_signature=[specs])
    def serve(inputs):
        return {"prob": model(inputs)}

    module = tf.Module()
    module.model = model
    module.serve = serve
    tf.saved_model.save(module, out, signatures={"serving_default": serve})


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
