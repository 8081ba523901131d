"""Keras W&D-like model (26 slots of dim 16, 5x1024 tower), batch 512: original vs rewritten on the CPU.

    python benchmarks/keras_wd_rewrite.py
"""
import os, time, statistics
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf, keras
import tiemb
from tiemb.rewrite import rewrite_sparse_lookups
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
rng = np.random.default_rng(0)
S, V, D, B = 26, 100_000, 16, 512
ids = keras.Input(shape=(S,), dtype="int64")
embs = [keras.layers.Flatten()(keras.layers.Embedding(V, D)(ids[:, i:i + 1])) for i in range(S)]
x = keras.layers.Concatenate()(embs)
emb_model = keras.Model(ids, x)
for _ in range(5):
    x = keras.layers.Dense(1024, activation="relu")(x)
full = keras.Model(ids, keras.layers.Dense(1)(x))
def freeze(m):
    cf = convert_variables_to_constants_v2(tf.function(lambda t: m(t), input_signature=[tf.TensorSpec([None, S], tf.int64)]).get_concrete_function())
    return cf.graph.as_graph_def(), [t.name for t in cf.inputs], [t.name for t in cf.outputs]
def fn_of(gd, inputs, outputs):
    tiemb.tf_ops.load()
    w = tf.compat.v1.wrap_function(lambda: tf.compat.v1.import_graph_def(gd, name=""), [])
    g = w.graph
    return w.prune([g.as_graph_element(n) for n in inputs], [g.as_graph_element(n) for n in outputs])
feed = tf.constant(rng.integers(0, V, (B, S)))
def timeit(f, n=30):
    for _ in range(5): f(feed)
    s = []
    for _ in range(n):
        t0 = time.perf_counter(); f(feed); s.append(time.perf_counter() - t0)
    return statistics.median(s) * 1e3
for name, m in (("embedding part", emb_model), ("whole model", full)):
    gd, i, o = freeze(m)
    new, rep = rewrite_sparse_lookups(gd, f"/tmp/wdstore_{name[0]}", max_batch_size=B, max_nnz=1)
    f0, f1 = fn_of(gd, i, o), fn_of(new, i, o)
    diff = float(np.max(np.abs(f0(feed)[0].numpy() - f1(feed)[0].numpy())))
    t0, t1 = [], []
    for _ in range(3):
        t0.append(timeit(f0)); t1.append(timeit(f1))
    a, b = statistics.median(t0), statistics.median(t1)
    print(f"| {name} | {rep.replaced} | {a:.2f} | {b:.2f} | {a / b:.2f}x | {diff:.1e} |", flush=True)
