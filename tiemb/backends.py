"""Dense backends: what runs the part of the model that is not embedding lookups.

One interface, chosen by what the installed TensorFlow offers, reported by name:

* ``tf-trt``: never offered: tiemb has no TF-TRT conversion of the dense
  part. Its status is detected (TensorFlow 2.18+ has no TensorRT at all) and
  a GPU target's report lists it as not offered, with the reason.
* ``xla``: XLA auto-clustering of the dense part: the dense nodes carry
  ``_XlaCompile``/``_XlaScope`` (what ``jit_scope`` writes), so TensorFlow
  compiles them as clusters wherever the model is served, without a
  process-wide ``TF_XLA_FLAGS``.
* ``tensorflow``: TensorFlow's own kernels (grappler + oneDNN on CPU); always there.

At optimization level 1 the matmuls of the dense part run in reduced
precision (bfloat16 through oneDNN on CPU, see ``rewrite/precision.py``) under
whichever backend is chosen. A backend whose outputs differ from the
original beyond the level's tolerance is dropped, and the report says so.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple

# Largest allowed max|optimized - original| / max|original| per level.
TOLERANCE = {0: 1e-6, 1: 3e-2}

# Dense op types put into the XLA cluster (what XLA compiles well on CPU and GPU).
_XLA_OPS = {"MatMul", "BatchMatMulV2", "BiasAdd", "AddV2", "Add", "Sub", "Mul", "Relu", "Sigmoid", "Tanh", "Softmax",
            "ConcatV2", "Reshape", "Sum", "Mean", "Square", "Maximum", "Minimum", "Cast", "Transpose"}


def tensorrt_status() -> Tuple[bool, str]:
    """(available, reason): whether TF-TRT can run here."""
    try:
        from tensorflow.python.compiler.tensorrt import trt_convert  # noqa: F401
        from tensorflow.python.compiler.tensorrt.utils import is_linked_tensorrt_version  # noqa: F401
    except ImportError:
        return False, "this TensorFlow has no TF-TRT module (TensorRT support was removed in TensorFlow 2.18)"
    try:
        from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils

        if not _pywrap_py_utils.is_tensorrt_enabled():
            return False, "this TensorFlow was built without TensorRT"
    except ImportError:
        return False, "this TensorFlow was built without TensorRT"
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return False, "TF-TRT needs a GPU and none is visible"
    return True, "TensorFlow built with TensorRT and a GPU visible"


def xla_status() -> Tuple[bool, str]:
    import tensorflow as tf

    if not tf.test.is_built_with_xla():
        return False, "this TensorFlow was built without XLA"
    return True, "XLA clusters compiled by TensorFlow's JIT"


def unavailable(device: str) -> List[Dict[str, str]]:
    """Backends not offered here, as ``{name, reason}`` (the report's
    ``dropped_backends`` entries): TF-TRT on a GPU target (tiemb has no TF-TRT
    conversion, and TensorFlow 2.18+ has no TensorRT: the status says which
    applies), XLA where TensorFlow was built without it."""
    out = []
    if device == "gpu":
        ok, reason = tensorrt_status()
        if ok:
            reason = "TensorFlow has TensorRT here, but tiemb has no TF-TRT conversion of the dense part"
        out.append({"name": "tf-trt", "reason": f"not offered: {reason}"})
    ok, reason = xla_status()
    if not ok:
        out.append({"name": "xla", "reason": f"not offered: {reason}"})
    return out


def candidates(level: int, device: str) -> List[Tuple[str, str]]:
    """Backends that can run here, best first: (name, what it is). Only
    these are built and compared; :func:`unavailable` lists the others."""
    out = []
    if xla_status()[0]:
        out.append(("xla", xla_status()[1]))
    out.append(("tensorflow", "TensorFlow's own kernels"))
    if level >= 1:   # if reduced precision is too lossy for this model: float32, said so in the report
        out.append(("tensorflow-fp32", "TensorFlow's own kernels, dense part kept in float32"))
    return out


def mark_xla(graph_def, skip_ops=("TiembLookup",)):
    """A copy of ``graph_def`` whose dense compute nodes are one XLA scope."""
    from tensorflow.core.framework import graph_pb2

    out = graph_pb2.GraphDef()
    out.CopyFrom(graph_def)
    for n in out.node:
        if n.op in _XLA_OPS and n.op not in skip_ops:
            n.attr["_XlaCompile"].b = True
            n.attr["_XlaScope"].s = b"tiemb_dense"
            n.attr["_XlaSeparateCompiledGradients"].b = False
    return out


def apply(name: str, graph_def, level: int):
    """``graph_def`` prepared for backend ``name`` at ``level``; and what was done."""
    from .rewrite.precision import matmuls_to_bf16

    notes = []
    if level >= 1 and not name.endswith("-fp32"):
        graph_def, n = matmuls_to_bf16(graph_def)
        notes.append(f"{n} matmuls in bfloat16 (oneDNN)")
    if name == "xla":
        graph_def = mark_xla(graph_def)
        notes.append("dense nodes marked for XLA compilation")
    elif name not in ("tensorflow", "tensorflow-fp32"):
        raise ValueError(f"dense backend must be one of 'xla', 'tensorflow', 'tensorflow-fp32', got {name!r}")
    return graph_def, notes


def relative_difference(want: Dict[str, object], got: Dict[str, object]) -> Tuple[float, float]:
    """(max absolute, max relative) difference over all outputs; relative to each output's largest magnitude."""
    import numpy as np

    abs_diff = rel = 0.0
    for k, w in want.items():
        w = np.asarray(w, np.float64)
        g = np.asarray(got[k], np.float64)
        if w.shape != g.shape:
            return float("inf"), float("inf")
        d = float(np.max(np.abs(w - g))) if w.size else 0.0
        scale = float(np.max(np.abs(w))) if w.size else 0.0
        abs_diff = max(abs_diff, d)
        rel = max(rel, d / scale if scale > 0 else (0.0 if d == 0 else float("inf")))
    return abs_diff, rel


def choose(level: int, device: str, build: Callable[[str], object],
           evaluate: Callable[[object], Tuple[float, float, float]], *, only: Optional[str] = None,
           names: Optional[Sequence[str]] = None, first_within: bool = False):
    """The one backend chooser: tries backends best first and keeps the
    fastest within the level's tolerance.

    Args:
        level: the optimization level (its tolerance: ``TOLERANCE[level]``).
        device: "cpu" or "gpu": which backends are candidates.
        build: ``build(name)`` makes a candidate model.
        evaluate: ``evaluate(model)`` returns (max abs diff, max rel diff,
            median seconds).
        only: force this one backend: ValueError when it is beyond the
            tolerance, instead of falling back.
        names: try these, in this order, instead of :func:`candidates`.
        first_within: keep the first candidate within the tolerance instead of
            the fastest (for callers whose ``evaluate`` does not time).

    Returns (name, model, info) where info has "dense_backend",
    "backend_results" and "dropped_backends" ([{name, reason}]). Raises
    RuntimeError when no backend is within the tolerance."""
    tol = TOLERANCE[level]
    if only is not None:
        order, dropped = [only], []
    else:
        order = list(names) if names is not None else [n for n, _ in candidates(level, device)]
        dropped = unavailable(device) if names is None else []
    results, best = [], None
    for name in order:
        try:
            model = build(name)
            abs_d, rel_d, seconds = evaluate(model)
        except Exception as e:  # a backend that cannot build or run this model is dropped, by name
            if only is not None:
                raise
            dropped.append({"name": name, "reason": f"failed on this model: {type(e).__name__}: {str(e)[:300]}"})
            continue
        results.append({"name": name, "max_abs_diff": abs_d, "max_rel_diff": rel_d, "median_s": seconds})
        if rel_d > tol:
            if only is not None:
                raise ValueError(f"dense backend {name!r} changes the outputs by {rel_d:.3g} relative, beyond level "
                                 f"{level}'s tolerance {tol:g}")
            dropped.append({"name": name, "reason": f"outputs differ by {rel_d:.3g} relative, beyond level {level}'s "
                                                    f"tolerance {tol:g}"})
            continue
        if best is None or seconds < best[2]:
            best = (name, model, seconds)
        if first_within:
            break
    if best is None:
        raise RuntimeError(f"no dense backend kept the outputs within level {level}'s tolerance: {dropped}")
    return best[0], best[1], {"dense_backend": best[0], "backend_results": results, "dropped_backends": dropped}
