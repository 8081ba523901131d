"""Serving a SavedModel in a fresh Python process (as a server would: import
tensorflow, import tiemb, tf.saved_model.load), for the equivalence tests."""

import os
import subprocess
import sys
import tempfile

import numpy as np

_CODE = """
import sys, numpy as np, tensorflow as tf, tiemb
model = tf.saved_model.load(sys.argv[1])
fn = model.signatures[sys.argv[2]]
batches = np.load(sys.argv[3], allow_pickle=False)
n = int(batches["count"])
out = {}
for b in range(n):
    keys = [k.split("/", 1)[1] for k in batches.files if k.startswith(f"{b}/")]
    result = fn(**{k: tf.constant(batches[f"{b}/{k}"]) for k in keys})
    for k, v in result.items():
        out[f"{b}/{k}"] = v.numpy()
np.savez(sys.argv[4], **out)
"""


def serve_fresh(model_dir, batches, signature="serving_default"):
    """Runs signature ``signature`` of the SavedModel at ``model_dir`` on each
    feed dict in ``batches`` in a new interpreter; returns a list of output dicts."""
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        arrays = {"count": np.array(len(batches))}
        for b, feeds in enumerate(batches):
            arrays.update({f"{b}/{k}": v for k, v in feeds.items()})
        np.savez(inp, **arrays)
        proc = subprocess.run([sys.executable, "-c", _CODE, model_dir, signature, inp, out], capture_output=True,
                              text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd="/")
        assert proc.returncode == 0, proc.stderr[-4000:]
        with np.load(out) as f:
            result = [{} for _ in batches]
            for key in f.files:
                b, name = key.split("/", 1)
                result[int(b)][name] = f[key]
        return result


def serve_here(model_dir, batches, signature="serving_default"):
    """The same in this process (the original model)."""
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)    # kept alive: its variables back the signature
    fn = model.signatures[signature]
    return [{k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in feeds.items()}).items()} for feeds in batches]


def assert_same_outputs(want, got, rtol=1e-6, atol=1e-7, what=""):
    assert len(want) == len(got)
    for b, (w, g) in enumerate(zip(want, got)):
        assert sorted(w) == sorted(g), (sorted(w), sorted(g))
        for k in w:
            assert w[k].shape == g[k].shape and w[k].dtype == g[k].dtype, (k, w[k].shape, g[k].shape)
            # Relative to the output's scale: a sum that cancels to ~0 keeps the rounding of its terms.
            scale = float(np.max(np.abs(w[k]))) if w[k].size else 0.0
            np.testing.assert_allclose(g[k], w[k], rtol=rtol, atol=max(atol, rtol * scale),
                                       err_msg=f"{what} batch {b} output {k}")


def run_in_threads(body, count: int, timeout: float = 300.0) -> None:
    """body(k) for k in range(count), all at once on their own threads.
    Fails when a thread does not finish within ``timeout`` (a deadlock) or
    when any raised, listing (k, error) for each."""
    import threading

    errors = []

    def worker(k):
        try:
            body(k)
        except Exception as e:  # noqa: BLE001  (reported below, with the thread)
            errors.append((k, repr(e)))

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "calls did not finish: deadlock"
    assert not errors, errors
