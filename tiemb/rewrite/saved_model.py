"""Rewriting a SavedModel: freeze a signature, fuse its lookups, save a
SavedModel whose table store is an asset (so the directory can be moved)."""

from __future__ import annotations

import os
import shutil
import tempfile


def rewrite_saved_model(src: str, dst: str, *, max_batch_size: int, max_nnz: int,
                        signature: str = "serving_default", overwrite: bool = False):
    """Writes an optimized copy of SavedModel ``src`` to ``dst``.

    The signature is frozen (variables become constants), its embedding
    lookups are replaced (see :func:`rewrite_sparse_lookups`), the table
    store's files become the model's assets (``dst/assets/``) and the model is saved with the same
    signature name, inputs and outputs. Load it after ``import tiemb``.

    Returns the RewriteReport. Raises ValueError for a missing signature, an
    existing non-empty ``dst`` without ``overwrite``; nothing is left at
    ``dst`` when it fails.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from .. import tf_ops
    from .sparse_lookup import rewrite_sparse_lookups

    if os.path.exists(dst) and os.listdir(dst) and not overwrite:
        raise ValueError(f"{dst} exists and is not empty (pass overwrite=True to replace it)")
    try:
        loaded = tf.saved_model.load(src)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"cannot load a SavedModel from {src}: {e}") from None
    if signature not in loaded.signatures:
        raise ValueError(f"{src} has no signature {signature!r}; it has {sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    frozen = convert_variables_to_constants_v2(fn)
    graph_def = frozen.graph.as_graph_def()
    specs = fn.structured_input_signature[1]               # {arg name: TensorSpec}
    arg_names = sorted(specs)
    # The frozen function's inputs are the signature's, flattened (keys sorted);
    # their placeholders need not be named after the keys (TF1 signatures).
    input_tensors = {name: t.name for name, t in zip(arg_names, frozen.inputs)}
    # The frozen function's outputs are the signature's, flattened (keys sorted).
    keys = tf.nest.flatten({k: k for k in fn.structured_outputs})
    outputs = {name: t.name for name, t in zip(keys, frozen.outputs)}

    work = tempfile.mkdtemp(prefix="tiemb-", dir=os.path.dirname(os.path.abspath(dst)) or None)
    try:
        store = os.path.join(work, "store")
        new_gd, report = rewrite_sparse_lookups(graph_def, store, max_batch_size=max_batch_size, max_nnz=max_nnz)
        if not report.replaced:   # nothing to do: the model itself, byte for byte
            shutil.copytree(src, os.path.join(work, "model"))
            _replace_dir(os.path.join(work, "model"), dst)
            return report
        tf_ops.load()
        out_names = sorted(outputs)
        has_store = any(n.name == "tiemb/store" for n in new_gd.node)

        def imported(*args):
            feed = {input_tensors[name]: a for name, a in zip(arg_names, args[:len(arg_names)])}
            if has_store:
                feed["tiemb/store:0"] = args[len(arg_names)]
            return tf.compat.v1.import_graph_def(new_gd, input_map=feed,
                                                 return_elements=[outputs[n] for n in out_names], name="")

        arg_specs = [tf.TensorSpec(specs[n].shape, specs[n].dtype, name=n) for n in arg_names]
        store_spec = [tf.TensorSpec([], tf.string)] if has_store else []
        wrapped = tf.compat.v1.wrap_function(imported, arg_specs + store_spec)

        module = tf.Module()
        module.graph = wrapped
        if has_store:
            # Assets are files: every store file is one, copied into the
            # model's assets/; the store is the manifest's directory, wherever
            # the model is loaded from.
            module.store_files = [tf.saved_model.Asset(os.path.join(store, f)) for f in sorted(os.listdir(store))
                                  if f != "manifest.txt"]
            module.manifest = tf.saved_model.Asset(os.path.join(store, "manifest.txt"))

        @tf.function(input_signature=arg_specs)
        def serve(*args):
            extra = [tf.strings.regex_replace(module.manifest.asset_path, "/[^/]*$", "")] if has_store else []
            result = module.graph(*args, *extra)
            return {n: r for n, r in zip(out_names, result)}

        module.serve = serve
        saved = os.path.join(work, "model")
        tf.saved_model.save(module, saved, signatures={signature: serve})
        _replace_dir(saved, dst)
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _replace_dir(src: str, dst: str):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.move(src, dst)
