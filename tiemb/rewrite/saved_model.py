"""Rewriting a SavedModel: freeze a signature, fuse its lookups, pick the
dense backend, save a SavedModel whose table store is an asset (so the
directory can be moved)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Dict, List

from ..timing import median_seconds


@dataclass
class FrozenSignature:
    """A SavedModel signature loaded once and frozen (see :func:`freeze_signature`).

    Fields: ``loaded`` (the loaded object: its variables back ``fn``),
    ``fn`` (the signature's concrete function), ``graph_def`` (frozen),
    ``resources`` ({resource placeholder: table value} of tables too big to
    freeze), ``arg_names`` (the signature's argument names, sorted),
    ``input_tensors`` ({argument: tensor of the frozen graph}),
    ``outputs`` ({output key: tensor of the frozen graph}), ``path``."""

    loaded: object
    fn: object
    graph_def: object
    resources: Dict[str, object]
    arg_names: List[str]
    input_tensors: Dict[str, str]
    outputs: Dict[str, str]
    path: str

    @property
    def specs(self):
        """{argument name: TensorSpec} of the signature."""
        return self.fn.structured_input_signature[1]


def freeze_signature(src: str, signature: str = "serving_default",
                     freeze_limit_bytes: int = 64 << 20) -> FrozenSignature:
    """Loads SavedModel ``src`` and freezes ``signature`` (see :func:`freeze_function`).

    Args:
        src: the SavedModel directory.
        signature: the signature to freeze.
        freeze_limit_bytes: 2-D float variables larger than this stay resource
            inputs, their values returned in ``resources``.

    Raises ValueError for an unreadable model or a missing signature."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(src)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"cannot load a SavedModel from {src}: {e}") from None
    if signature not in loaded.signatures:
        raise ValueError(f"{src} has no signature {signature!r}; it has {sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    frozen, resources = freeze_function(fn, freeze_limit_bytes)
    arg_names = sorted(fn.structured_input_signature[1])
    # The frozen function's inputs are the signature's, flattened (keys sorted);
    # their placeholders need not be named after the keys (TF1 signatures).
    input_tensors = {name: t.name for name, t in zip(arg_names, frozen.inputs)}
    # The frozen function's outputs are the signature's, flattened (keys sorted).
    keys = tf.nest.flatten({k: k for k in fn.structured_outputs})
    outputs = {name: t.name for name, t in zip(keys, frozen.outputs)}
    return FrozenSignature(loaded, fn, frozen.graph.as_graph_def(), resources, arg_names, input_tensors, outputs,
                           src)


def rewrite_saved_model(src: str, dst: str, *, max_batch_size: int, max_nnz: int,
                        signature: str = "serving_default", overwrite: bool = False, level: int = 0,
                        device: str = "cpu", test_batches=None, backend: str = None,
                        freeze_limit_bytes: int = 64 << 20, store_files=None, slot_num: int = None,
                        fuse_outputs: bool = True, frozen: FrozenSignature = None):
    """Writes an optimized copy of SavedModel ``src`` to ``dst``.

    The signature is frozen (variables become constants), its embedding
    lookups are replaced (see :func:`rewrite_sparse_lookups`), the table
    store's files become the model's assets (``dst/assets/``) and the model is saved with the same
    signature name, inputs and outputs. Load it after ``import tiemb``.

    Args:
        level: 0 lossless; 1 float16 tables and bfloat16 dense matmuls.
        device: "cpu" or "gpu": which dense backends are candidates.
        test_batches: feed dicts (signature argument name -> array). With
            them every available dense backend (see :mod:`tiemb.backends`) is
            built, compared with the original on them and timed; the fastest
            within the level's tolerance is saved and the others are listed
            with the reason they were dropped. Without them: ``backend`` (default
            "tensorflow" at level 0; at level 1 also bf16 matmuls) unverified.
        backend: force one backend by name.
        store_files: {file name: text} written into the table store (saved as
            assets with it), e.g. the optimization config.
        slot_num: most features (distinct id inputs) an op serves (None:
            what the model's ops read; see :func:`rewrite_sparse_lookups`).
        fuse_outputs: let the op write the model's concatenations, stacks
            and sums of lookup outputs (see :func:`rewrite_sparse_lookups`).
        freeze_limit_bytes: 2-D float variables larger than this are not
            frozen into the GraphDef (which cannot exceed 2 GB): their values
            go straight from the model's variables to the table store.
        frozen: ``src`` already loaded and frozen by :func:`freeze_signature`
            (so a caller that has loaded it does not load it again); None:
            loaded here.

    Returns the RewriteReport (with ``dense``: the backend chosen and why).
    Raises ValueError for a missing signature, an unreadable model, an
    existing non-empty ``dst`` without ``overwrite``; nothing is left at
    ``dst`` when it fails.
    """
    from .. import backends
    from .sparse_lookup import rewrite_sparse_lookups

    if level not in backends.TOLERANCE:
        raise ValueError(f"optimization level must be one of {sorted(backends.TOLERANCE)}, got {level!r}")
    if os.path.exists(dst) and os.listdir(dst) and not overwrite:
        raise ValueError(f"{dst} exists and is not empty (pass overwrite=True to replace it)")
    sig = frozen or freeze_signature(src, signature, freeze_limit_bytes)
    work = tempfile.mkdtemp(prefix="tiemb-", dir=os.path.dirname(os.path.abspath(dst)) or None)
    try:
        store = os.path.join(work, "store")
        new_gd, report = rewrite_sparse_lookups(sig.graph_def, store, max_batch_size=max_batch_size, max_nnz=max_nnz,
                                                half_tables=level >= 1, resources=sig.resources, device=device,
                                                slot_num=slot_num, fuse_outputs=fuse_outputs)
        new_gd = _drop_resources(new_gd, sig.resources, src)
        if report.replaced:
            write_store_files(store, store_files)
        if not report.replaced and level == 0:   # nothing to do: the model itself, byte for byte
            shutil.copytree(src, os.path.join(work, "model"))
            _replace_dir(os.path.join(work, "model"), dst)
            return report
        module, report.dense = _dense_module(sig, new_gd, store, level, device, test_batches, backend)
        saved = os.path.join(work, "model")
        import tensorflow as tf

        tf.saved_model.save(module, saved, signatures={signature: module.serve})
        _replace_dir(saved, dst)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _dense_module(sig: FrozenSignature, new_gd, store: str, level: int, device: str, test_batches, backend):
    """(serving module, report.dense): the rewritten graph under the dense
    backend chosen on ``test_batches`` (or ``backend``, unverified without them)."""
    import tensorflow as tf

    from .. import backends, tf_ops

    tf_ops.load()
    has_store = any(n.op == "TiembLookup" for n in new_gd.node)
    specs = sig.specs
    arg_specs = [tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in sig.arg_names]

    def build(name):
        gd, notes = backends.apply(name, new_gd, level)
        return _module(tf, gd, sig.arg_names, arg_specs, sig.input_tensors, sig.outputs,
                       store if has_store else None), notes

    if not test_batches:
        name = backend or "tensorflow"
        module, notes = build(name)
        return module, {"dense_backend": name, "backend_results": [], "dropped_backends": [], "verified": False,
                        "notes": notes, "level": level}
    want = [{k: v.numpy() for k, v in sig.fn(**_feeds(tf, b)).items()} for b in test_batches]

    def evaluate(candidate):
        module, _ = candidate

        def call(b):
            return module.serve(*[tf.constant(b[n]) for n in sig.arg_names])

        diffs = [backends.relative_difference(w, {k: v.numpy() for k, v in call(b).items()})
                 for w, b in zip(want, test_batches)]
        return max(d[0] for d in diffs), max(d[1] for d in diffs), median_seconds(lambda: call(test_batches[0]))

    _, (module, notes), info = backends.choose(level, device, build, evaluate, only=backend)
    return module, dict(info, notes=notes, level=level)


def freeze_function(fn, limit_bytes: int):
    """``fn`` with its variables as constants, except 2-D float variables over
    ``limit_bytes`` (embedding tables: they may not fit a 2 GB GraphDef),
    which stay resource inputs. Returns (frozen function, {resource
    placeholder name: value})."""
    import numpy as np
    from tensorflow.python.framework import convert_to_constants as c2c

    by_handle = {id(v.handle): v for v in fn.variables}
    keep = {}
    for external, internal in zip(fn.captured_inputs, fn.graph.internal_captures):
        v = by_handle.get(id(external))
        if v is None or len(v.shape) != 2 or v.dtype not in ("float32", "float16"):
            continue
        if int(np.prod(v.shape)) * v.dtype.size > limit_bytes:
            keep[internal.op.name] = v
    def convert(denylist):
        # convert_variables_to_constants_v2 with a denylist (its public form has none).
        data = c2c._FunctionConverterDataInEager(func=fn, lower_control_flow=True, aggressive_inlining=False,
                                                 variable_names_denylist=set(denylist))
        return c2c._replace_variables_by_constants(converter_data=data)

    graph_def, converted = convert(keep)
    # Only tables stay variables: a big matrix some op other than a row gather
    # reads (a dense kernel) is frozen like the rest.
    not_tables = _read_otherwise(graph_def, keep)
    if not_tables:
        keep = {k: v for k, v in keep.items() if k not in not_tables}
        graph_def, converted = convert(keep)
    frozen = c2c._construct_concrete_function(fn, graph_def, converted)
    return frozen, {name: v.numpy() for name, v in keep.items()}




def _read_otherwise(graph_def, resources):
    """The resource placeholders in ``resources`` read by anything but row
    gathers (through Identity / ReadVariableOp)."""
    from .graph import GraphView

    view = GraphView(graph_def)
    bad = set()
    for name in resources:
        stack = [name]
        while stack:
            for n, k in view.data_consumers(stack.pop()):
                if n.op in ("Identity", "ReadVariableOp"):
                    stack.append(n.name)
                elif not (n.op in ("ResourceGather", "GatherV2") and k == 0):
                    bad.add(name)
    return bad


def _drop_resources(graph_def, resources, src):
    """Removes the big tables' resource placeholders once nothing reads them;
    a big table still read by an op tiemb did not replace cannot be served
    from a frozen graph, and is an error naming both."""
    from .graph import GraphView

    if not resources:
        return graph_def
    view = GraphView(graph_def)
    users = [(name, view.consumers[name][0][0].name) for name in resources if view.consumers.get(name)]
    if users:
        name, user = users[0]
        raise ValueError(f"{src}: table {name} ({resources[name].nbytes >> 20} MB) is read by {user}, which is not an "
                         "embedding lookup tiemb replaces, and is too big to freeze into a GraphDef; raise "
                         "freeze_limit_bytes if it fits in 2 GB")
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    del out.node[:]
    out.node.extend(n for n in graph_def.node if n.name not in resources)
    return out


def _feeds(tf, batch):
    return {k: tf.constant(v) for k, v in batch.items()}


def _module(tf, graph_def, arg_names, arg_specs, input_tensors, outputs, store):
    """A tf.Module serving ``graph_def`` with the signature's inputs and
    outputs; its TiembLookup ops read ``store``, saved as assets."""
    out_names = sorted(outputs)

    def imported(*args):
        feed = {input_tensors[name]: a for name, a in zip(arg_names, args[:len(arg_names)])}
        if store is not None:
            feed["tiemb/store:0"] = args[len(arg_names)]
        return tf.compat.v1.import_graph_def(graph_def, input_map=feed,
                                             return_elements=[outputs[n] for n in out_names], name="")

    store_spec = [tf.TensorSpec([], tf.string)] if store is not None else []
    wrapped = tf.compat.v1.wrap_function(imported, arg_specs + store_spec)
    module = tf.Module()
    module.graph = wrapped
    if store is not None:
        # Assets are files: every store file is one, copied into the model's
        # assets/; the store is the directory of its description (store.json),
        # wherever the model is loaded from.
        module.store_files = [tf.saved_model.Asset(os.path.join(store, f)) for f in sorted(os.listdir(store))
                              if f != "store.json"]
        module.manifest = tf.saved_model.Asset(os.path.join(store, "store.json"))

    @tf.function(input_signature=arg_specs)
    def serve(*args):
        extra = [tf.strings.regex_replace(module.manifest.asset_path, "/[^/]*$", "")] if store is not None else []
        result = module.graph(*args, *extra)
        return {n: r for n, r in zip(out_names, result)}

    module.serve = serve
    return module


def write_store_files(store: str, files) -> None:
    """Writes {name: text} into the store. The resolved tiemb/* parameters
    (tiemb_config.json, kept as the record of the run) also set the store's
    tiers in store.json, where the engines read them."""
    import json

    from .. import store as table_store

    for name, text in (files or {}).items():
        with open(os.path.join(store, name), "w") as f:
            f.write(text)
        if name == "tiemb_config.json":
            table_store.write_tiers(store, table_store.tiers_from_parameters(json.loads(text)))


def _replace_dir(src: str, dst: str):
    # Atomic where an old dst exists: a reader sees the old model or the new one.
    from .._files import replace

    if replace(src, dst):
        shutil.rmtree(src, ignore_errors=True)   # src holds the old one now
