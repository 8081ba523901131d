"""Step 1: the model, loaded once, and its inputs and outputs."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from .errors import OptimizeError

GRAPH_SINK_SKIP = {"NoOp", "Assert", "Const", "Placeholder", "PlaceholderWithDefault", "SaveV2", "RestoreV2",
                   "MergeV2Checkpoints", "VarHandleOp", "AssignVariableOp"}


@dataclass
class Model:
    """A model to run: inputs (name, dtype, shape) and outputs by name."""

    kind: str                                   # "saved_model" | "frozen" | "graphdef"
    inputs: List[str]
    input_dtypes: Dict[str, str]
    input_shapes: Dict[str, List[Optional[int]]]
    outputs: List[str]
    graph_def: object = None                    # frozen graph (saved models: the signature, frozen)
    resources: Dict[str, np.ndarray] = field(default_factory=dict)
    placeholder_of: Dict[str, str] = field(default_factory=dict)   # input name -> placeholder node
    path: Optional[str] = None
    signature: object = None                    # saved models: the FrozenSignature (loaded once)

    def input_of(self) -> Dict[str, str]:
        """placeholder node -> the model input it is."""
        return {p: name for name, p in self.placeholder_of.items()}

    def placeholders(self) -> List[str]:
        """The tensors the inputs feed, in the order of ``inputs``."""
        return [f"{self.placeholder_of[n]}:0" for n in self.inputs]


def device_of(device_type) -> str:
    """seed 000's device_type (0/"gpu", 1/"cpu") as "gpu" or "cpu"."""
    if device_type in (0, "gpu", "GPU"):
        return "gpu"
    if device_type in (1, "cpu", "CPU"):
        return "cpu"
    raise OptimizeError(f"device_type must be 0 or 'gpu' (GPU), 1 or 'cpu' (CPU), got {device_type!r}")


def kind_of(input_model) -> str:
    """"saved_model", "frozen" (a .pb path) or "graphdef"; OptimizeError otherwise."""
    from tensorflow.core.framework import graph_pb2

    if isinstance(input_model, graph_pb2.GraphDef):
        return "graphdef"
    if isinstance(input_model, (str, os.PathLike)):
        path = os.fspath(input_model)
        if os.path.isdir(path):
            if not os.path.exists(os.path.join(path, "saved_model.pb")):
                raise OptimizeError(f"{path} is a directory without saved_model.pb: not a SavedModel")
            return "saved_model"
        if os.path.isfile(path):
            return "frozen"
        raise OptimizeError(f"{path} does not exist")
    raise OptimizeError(f"input_model must be a SavedModel directory, a frozen .pb path or a GraphDef, got "
                        f"{type(input_model).__name__}")


def strip(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def load_model(input_model, kind: str, input_names=None, output_names=None) -> Model:
    """The model of kind ``kind`` (see :func:`kind_of`), loaded once; its
    inputs and outputs (the signature's, or a graph's placeholders and sinks)
    narrowed to ``input_names`` / ``output_names`` where given. OptimizeError
    naming unknown names."""
    m = _load_saved_model(input_model) if kind == "saved_model" else _load_graph(input_model, kind)
    if input_names is not None:
        unknown = [n for n in input_names if strip(n) not in m.inputs]
        if unknown:
            raise OptimizeError(f"input_nodes_names {unknown} do not exist; the model's inputs are {m.inputs}")
        m.inputs = [strip(n) for n in input_names]
    if output_names is not None:
        if kind == "saved_model":
            unknown = [n for n in output_names if n not in m.outputs]
        else:
            names = {n.name for n in m.graph_def.node}
            unknown = [n for n in output_names if strip(n) not in names]
        if unknown:
            listing = m.outputs if kind == "saved_model" else sorted(m.outputs)
            raise OptimizeError(f"output_nodes_names {unknown} do not exist; the model's outputs are {listing}")
        m.outputs = [n if kind == "saved_model" else strip(n) for n in output_names]
    if not m.outputs:
        raise OptimizeError("the model has no outputs to compare; pass output_nodes_names")
    return m


def _load_saved_model(input_model) -> Model:
    from ..rewrite.saved_model import freeze_signature

    path = os.fspath(input_model)
    try:
        sig = freeze_signature(path, "serving_default")
    except ValueError as e:
        raise OptimizeError(str(e)) from None
    specs = sig.specs
    names = sig.arg_names
    return Model("saved_model", names, {n: specs[n].dtype.name for n in names},
                 {n: specs[n].shape.as_list() if specs[n].shape.rank is not None else None for n in names},
                 sorted(sig.fn.structured_outputs), sig.graph_def, sig.resources,
                 {n: t.split(":")[0] for n, t in sig.input_tensors.items()}, path, sig)


def _load_graph(input_model, kind: str) -> Model:
    import tensorflow as tf

    graph_def, path = input_model, None
    if kind == "frozen":
        from ..rewrite.frozen_graph import read_graph_def

        path = os.fspath(input_model)
        try:
            graph_def = read_graph_def(path)
        except ValueError as e:
            raise OptimizeError(str(e)) from None
    placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
    consumed = {i.split(":")[0].lstrip("^") for n in graph_def.node for i in n.input}
    sinks = [n.name for n in graph_def.node if n.name not in consumed and n.op not in GRAPH_SINK_SKIP]
    dtypes = {n.name: tf.dtypes.as_dtype(n.attr["dtype"].type).name for n in placeholders}
    shapes = {n.name: (None if n.attr["shape"].shape.unknown_rank else
                       [d.size if d.size >= 0 else None for d in n.attr["shape"].shape.dim])
              for n in placeholders}
    return Model(kind, [n.name for n in placeholders], dtypes, shapes, sinks, graph_def, {},
                 {n.name: n.name for n in placeholders}, path)


def tensor_values(model: Model, names: List[str], batches, graph_def=None) -> List[Dict[str, np.ndarray]]:
    """The values of tensors ``names`` of ``graph_def`` (default the model's
    graph; or its rewrite, which holds every fused op's inputs) on each batch."""
    import tensorflow as tf

    from .. import tf_ops
    from ..runner import graph_function

    tf_ops.load()      # a rewritten graph holds TiembLookup nodes (never run here)
    fn = graph_function(model.graph_def if graph_def is None else graph_def, model.placeholders(), names)
    out = []
    for b in batches:
        values = fn(*[tf.constant(b[n]) for n in model.inputs])
        out.append({t: v.numpy() for t, v in zip(names, values)})
    return out
