"""``export_bundle``: an optimized model as a bundle a GPU host serves
without TensorFlow (export side: needs TensorFlow)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import dense as dense_mod
from . import format as fmt
from .samples import test_batches
from .wiring import PARTS, batch_input, discover

DEFAULT_BUCKETS = (1, 64, 512, 4096)


def buckets_from(batch_sizes=None, input_shapes=None, max_batch_size: Optional[int] = None) -> List[int]:
    """The batch buckets: ``batch_sizes`` if given; else the batch sizes of
    ``input_shapes`` (seed 000: ``seperate`` sizes as they are, a ``range``
    as the powers of two inside it and its maximum); else 1, 64, 512, 4096;
    never above ``max_batch_size``."""
    if batch_sizes:
        sizes = sorted({int(b) for b in batch_sizes})
    elif input_shapes:
        shape = input_shapes[0]
        if shape.kind == "discrete":
            sizes = sorted({s[0] for s in shape.shapes})
        else:
            lo, hi = shape.min_shape[0], shape.max_shape[0]
            sizes = sorted({b for b in (2 ** k for k in range(31)) if lo <= b <= hi} | {hi})
    else:
        sizes = list(DEFAULT_BUCKETS)
    if max_batch_size:
        sizes = [b for b in sizes if b <= max_batch_size] or [max_batch_size]
    if not sizes or any(b < 1 for b in sizes):
        raise ValueError(f"batch sizes must be positive ints, got {batch_sizes!r}")
    return sizes


def export_bundle(model: str, bundle_dir: str, batch_sizes: Optional[Sequence[int]] = None, level: int = 0,
                  optimization_config=None, test_data=None, baseline: bool = False, input_shapes=None,
                  signature: str = "serving_default", overwrite: bool = True, verify: bool = True) -> dict:
    """Writes a bundle for SavedModel ``model`` to ``bundle_dir`` (see
    :mod:`tiemb.serving.format` for what it holds); returns its metadata.

    Args:
        model: a SavedModel directory, original (optimized here first: its
            embedding lookups fused, tables written to the bundle's store) or
            already optimized by tiemb (its store is copied).
        bundle_dir: created; replaced when it exists and ``overwrite``.
        batch_sizes: the batch buckets, one dense module each (a request is
            padded to the next bucket); default from ``input_shapes``, else
            1, 64, 512, 4096; at most ``tiemb/max_batch_size``.
        level: 0 lossless (float32 tables, every dot at full float32
            precision: no TF32 on GPUs); 1 float16 tables and bfloat16 matmuls.
        optimization_config: an :class:`tiemb.OptimizeConfig` or a dict of
            ``tiemb/*`` parameters (engine sizes; GPU tiers); saved in the bundle.
        test_data: a feed dict or a list of them (signature argument name ->
            numpy array). TensorFlow's outputs for them are recorded; the
            slots' wiring is verified on them; the loaded bundle is compared
            with them (``verify``). Models taking SparseTensor pieces or -1
            padded ids need them; otherwise ids are drawn below the smallest
            table's row count and floats from a normal distribution.
        baseline: also lower the original model's whole graph per bucket,
            where XLA can compile it (else the reason is recorded).
        input_shapes: parsed input shapes (:func:`tiemb.parse_input_shapes`):
            the buckets and the shapes of generated test data.
        signature: the SavedModel signature served.
        verify: load the bundle on the CPU (jax's CPU backend) and compare
            it with TensorFlow on the test data; the difference is recorded.

    Raises ValueError naming what cannot be bundled (a slot whose ids the
    runtime cannot compute, a dense part XLA cannot compile, ...).
    """
    import tensorflow as tf

    from .. import backends, tf_ops
    from ..config import OptimizeConfig
    from ..rewrite.saved_model import _freeze
    from ..rewrite.sparse_lookup import rewrite_sparse_lookups

    if level not in (0, 1):
        raise ValueError(f"level must be 0 or 1, got {level!r}")
    if isinstance(optimization_config, dict):
        optimization_config = OptimizeConfig.from_dict(optimization_config)
    params = (optimization_config or OptimizeConfig()).resolve()
    buckets = buckets_from(batch_sizes, input_shapes, params.get("tiemb/max_batch_size"))
    if os.path.exists(bundle_dir) and os.listdir(bundle_dir) and not overwrite:
        raise ValueError(f"{bundle_dir} exists and is not empty")
    tf_ops.load()
    try:
        loaded = tf.saved_model.load(model)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise ValueError(f"cannot load a SavedModel from {model}: {e}") from None
    if signature not in loaded.signatures:
        raise ValueError(f"{model} has no signature {signature!r}; it has {sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    frozen, resources = _freeze(fn, 64 << 20)
    graph_def = frozen.graph.as_graph_def()
    specs = fn.structured_input_signature[1]
    arg_names = sorted(specs)
    input_tensors = {name: t.name for name, t in zip(arg_names, frozen.inputs)}
    out_keys = tf.nest.flatten({k: k for k in fn.structured_outputs})
    outputs = {k: t.name for k, t in zip(out_keys, frozen.outputs)}
    out_names = sorted(outputs)
    fetches = [outputs[k] for k in out_names]

    batches = test_batches(test_data, specs, input_shapes, graph_def)
    want = [{k: v.numpy() for k, v in fn(**{n: tf.constant(b[n]) for n in arg_names}).items()} for b in batches]

    parent = os.path.dirname(os.path.abspath(bundle_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tiemb-bundle-", dir=parent)
    try:
        store = os.path.join(work, fmt.STORE)
        already = [n for n in graph_def.node if n.op == "TiembLookup"]
        # Provisional: the store's manifest is written again below with the ids per sample the wiring shows.
        max_nnz = params.get("tiemb/max_nnz") or 1
        if already:
            shutil.copytree(os.path.join(model, "assets"), store)
            new_gd, lookups = graph_def, None
            ops = [{"name": n.name} for n in already]
            optimized_input = True
        else:
            # One output per slot, ids wired from the model's inputs as the bundle's runtime knows them: no
            # fused outputs, no padded id matrix slots (their wiring is not in bundle format 1).
            new_gd, report = rewrite_sparse_lookups(graph_def, store, max_batch_size=buckets[-1], max_nnz=max_nnz,
                                                    half_tables=level >= 1, resources=resources, fuse_outputs=False,
                                                    pooled=False)
            ops, lookups = report.ops, {d["output"]: d for d in report.lookups}
            optimized_input = False
        config_json = json.dumps({k: v for k, v in params.items() if v is not None}, indent=1, sort_keys=True)
        if ops:   # the store's tiers, where the engines read them
            from .. import store as table_store

            table_store.write_tiers(store, table_store.tiers_from_parameters(params))
        with open(os.path.join(work, fmt.CONFIG), "w") as f:
            f.write(config_json)
        wiring = discover(new_gd, ops, input_tensors, batches)
        op_meta, lookup_specs = _ops_meta(new_gd, ops, wiring, lookups, store)
        slot_num = max([len(o["slots"]) for o in op_meta] + [1])
        max_nnz = params.get("tiemb/max_nnz") or _max_nnz(op_meta, batches)
        if ops:
            from .. import tf_ops

            tf_ops.resize_store(store, max_batch_size=buckets[-1], slot_num=slot_num, max_nnz=max_nnz)

        # The dense part: model inputs it still reads, lookup outputs, weights
        # (weights become arguments before the level-1 casts, so that they
        # stay float32 on disk and the casts run inside the module).
        dg = dense_mod.pruned(dense_mod.dense_part(new_gd), fetches)
        dg, weights = dense_mod.weights_to_placeholders(dg)
        notes = []
        if level >= 1:
            dg, notes = backends.apply("tensorflow", dg, level)
        present = set(dense_mod.placeholders(dg))
        dense_inputs = [n for n in arg_names if input_tensors[n].split(":")[0] in present]
        padded = _padded_inputs(dense_inputs, op_meta)
        inputs_meta = _inputs_meta(specs, batches, padded, op_meta)
        _fill_gather_shapes(lookup_specs, inputs_meta)
        flat = [(o["name"], k, s) for o in op_meta for k, s in enumerate(lookup_specs[o["name"]])]
        # Only the lookup outputs the dense part reads are its arguments.
        lookup_args = [(i, f"{dense_mod.lookup_placeholder(op, k)}:0", s) for i, (op, k, s) in enumerate(flat)
                       if dense_mod.lookup_placeholder(op, k) in present]
        known = set(weights) | {t.split(":")[0] for _, t, _ in lookup_args} | \
            {input_tensors[i].split(":")[0] for i in dense_inputs}
        unread = sorted(present - known)
        if unread:
            raise ValueError(f"the dense part reads placeholder {unread[0]!r}, which is no model input")
        prev_tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
        tf.config.experimental.enable_tensor_float_32_execution(False)   # dots lowered at HIGHEST precision
        kept = None
        try:
            for b in buckets:
                args = [(input_tensors[n], _shape_at(inputs_meta[n]["shape"], b), inputs_meta[n]["dtype"])
                        for n in dense_inputs]
                args += [(t, tuple(b if d == -1 else d for d in s["shape"]), s["dtype"]) for _, t, s in lookup_args]
                args += [(f"{k}:0", v.shape, v.dtype.name) for k, v in weights.items()]
                try:
                    g, fetch_b = dense_mod.fold_shapes(dg, args, fetches)
                    left = set(dense_mod.placeholders(g))
                    args = [a for a in args if a[0].split(":")[0] in left]
                    text = dense_mod.lower(g, args, fetch_b)
                except ValueError as e:
                    raise ValueError(f"XLA cannot compile the dense part at batch {b}: {e}") from None
                if kept is None:
                    kept = [a[0] for a in args]
                elif kept != [a[0] for a in args]:
                    raise ValueError(f"the dense part reads other inputs at batch {b} than at {buckets[0]}")
                bad = dense_mod.dots_not_highest(text) if level == 0 else []
                if bad:
                    raise ValueError(f"level 0: a dot of the dense module is not at full float32 precision: {bad[0]}")
                with open(os.path.join(work, fmt.dense_module(b)), "w") as f:
                    f.write(text)
            base = _baseline(tf, graph_def, resources, arg_names, input_tensors, inputs_meta, fetches, buckets,
                             work) if baseline and not optimized_input else \
                ({"reason": "the model given is already optimized: its original graph is not at hand"}
                 if baseline else None)
        finally:
            tf.config.experimental.enable_tensor_float_32_execution(prev_tf32)

        outputs_meta = [{"name": k, "dtype": want[0][k].dtype.name, "shape": [-1] + list(want[0][k].shape[1:]),
                         "batched": bool(want[0][k].ndim >= 1 and
                                         all(w[k].shape[0] == _batch_of(b, inputs_meta) for w, b in
                                             zip(want, batches)))} for k in out_names]
        meta = {"level": level, "buckets": buckets, "inputs": inputs_meta, "outputs": outputs_meta,
                "ops": op_meta, "engine": {"max_batch_size": buckets[-1], "slot_num": slot_num, "max_nnz": max_nnz},
                "dense": {"inputs": dense_inputs, "lookups": None, "weights": None,
                          "modules": {str(b): fmt.dense_module(b) for b in buckets}, "notes": notes,
                          "precision": "float32 dots at HIGHEST precision" if level == 0 else
                          "float16 tables, bfloat16 matmuls"},
                "batch_source": batch_input(wiring, [n for n in arg_names if inputs_meta[n]["padded"]]),
                "baseline": base, "source_model": os.path.abspath(model), "signature": signature,
                "tensorflow": tf.__version__}
        if meta["batch_source"] is None:
            raise ValueError("cannot tell a request's batch size: no input has a batch dimension and no slot "
                             "reads a dense_shape")
        # What the modules take, in order: model inputs, lookup outputs, weights.
        kept = set(kept)
        dense_inputs = [n for n in dense_inputs if input_tensors[n] in kept]
        lookup_args = [a for a in lookup_args if a[1] in kept]
        weights = {k: v for k, v in weights.items() if f"{k}:0" in kept}
        np.savez(os.path.join(work, fmt.WEIGHTS), **{_npz_key(k): v for k, v in weights.items()})
        meta["dense"].update(inputs=dense_inputs, lookups=[i for i, _, _ in lookup_args],
                             weights=[_npz_key(k) for k in weights])
        fmt.write_tests(work, batches, want)
        fmt.write_meta(work, meta)
        if verify:
            meta["verified"] = _verify(work)
            fmt.write_meta(work, meta)
        if os.path.exists(bundle_dir):
            shutil.rmtree(bundle_dir)
        shutil.move(work, bundle_dir)
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _npz_key(name: str) -> str:
    return name.replace("/", "|")


def _shape_at(shape, batch: int):
    return tuple(batch if i == 0 and d == -1 else d for i, d in enumerate(shape))


def _batch_of(feeds, inputs_meta) -> int:
    for name, spec in inputs_meta.items():
        if spec["padded"]:
            return feeds[name].shape[0]
    return -1


def _max_nnz(op_meta, batches) -> int:
    """Most ids a sample may carry in one slot (the engine's max_nnz): the
    width of a gathered id matrix or of a padded one compacted whole, 1 for
    a column, and for SparseTensor pieces twice the most the test data shows
    (set ``tiemb/max_nnz`` when requests may carry more)."""
    from .wiring import compute

    most = 1
    for op in op_meta:
        for slot in op["slots"]:
            src = slot["ids"]
            x = batches[0][src["input"]]
            if slot["id_column"] >= 0 or src.get("column") is not None:
                continue
            if slot["mode"] == "gather" or src["kind"] in ("present_values", "present_rows"):
                most = max(most, int(np.prod(x.shape[1:])) if x.ndim > 1 else 1)
            elif slot["segment_ids"] is not None:
                for b in batches:
                    seg = np.asarray(compute(b[slot["segment_ids"]["input"]], slot["segment_ids"]))
                    if seg.size:
                        most = max(most, 2 * int(np.bincount(seg.astype(np.int64)).max()))
    return most


def _ops_meta(graph_def, ops, wiring, lookups, store):
    """Per op: its slots (table, mode, combiner, ..., sources); and per op the
    output shapes/dtypes of its slots as functions of the batch (-1)."""
    from tensorflow.python.framework import dtypes

    from .. import _C

    nodes = {n.name: n for n in graph_def.node}
    meta, shapes = [], {}
    for op in ops:
        node = nodes[op["name"]]
        a = node.attr
        if (len(a["slot_outputs"].list.i) and list(a["slot_outputs"].list.i) != list(range(a["N"].i))) or \
                any(w >= 0 for w in a["id_widths"].list.i):
            raise fmt.BundleError(f"{op['name']} writes fused outputs or reads padded id matrices (the model was "
                                  "optimized with output fusion or pooled slots, which bundle format 1 does not "
                                  "wire); export the original model instead")
        slots, specs = [], []
        for s in range(a["N"].i):
            table = a["tables"].list.s[s].decode()
            rows, dim = _C.read_table_rows(os.path.join(store, table), [])[:2]
            src = wiring[op["name"]][s]
            slot = {"name": op["slots"][s] if "slots" in op else f"{node.name}:{s}",
                    "table": table, "rows": int(rows), "dim": int(dim), "mode": a["modes"].list.s[s].decode(),
                    "combiner": a["combiners"].list.s[s].decode(), "default_id": int(a["default_ids"].list.i[s]),
                    "id_column": int(a["id_columns"].list.i[s]), "wrap_negative": bool(a["wrap_negative"].list.b[s]),
                    "out_dtype": dtypes.as_dtype(a["out_types"].list.type[s]).name,
                    **{p: src[p] for p in PARTS}}
            if slot["ids"] is None:
                raise ValueError(f"{node.name} slot {s}: its ids are a constant; nothing to serve")
            slots.append(slot)
            if slot["mode"] == "gather" and slot["id_column"] < 0:
                shape = None          # the ids' shape + [dim]: filled in by _inputs_meta's caller below
            else:
                shape = [-1, int(dim)]
            specs.append({"shape": shape, "dtype": slot["out_dtype"], "slot": slot})
        meta.append({"name": node.name, "slots": slots})
        shapes[node.name] = specs
    return meta, shapes


def _padded_inputs(dense_inputs, op_meta) -> Dict[str, object]:
    """Inputs padded to the bucket, with their fill value: those the dense
    part reads and the id matrices slots read (not SparseTensor pieces)."""
    pad = {n: 0 for n in dense_inputs}
    for op in op_meta:
        for slot in op["slots"]:
            src = slot["ids"]
            if src["kind"] in ("present_values", "present_rows"):
                pad[src["input"]] = src["ignore"]
            elif slot["mode"] == "gather" or src["kind"] == "column" and slot["id_column"] >= 0 \
                    or slot["id_column"] >= 0:
                pad.setdefault(src["input"], 0)
    return pad


def _inputs_meta(specs, batches, padded, op_meta):
    out = {}
    for name, spec in specs.items():
        x = batches[0][name]
        shape = [-1 if d is None else int(d) for d in spec.shape.as_list()] if spec.shape.rank is not None \
            else [-1] * x.ndim
        # Dimensions the signature leaves open are fixed by the test data,
        # except the batch of padded inputs and the lengths of sparse pieces.
        if name in padded:
            shape = [-1] + [int(d) for d in x.shape[1:]]
        out[name] = {"dtype": spec.dtype.name, "shape": shape, "padded": name in padded,
                     "pad": padded.get(name, 0)}
    for op in op_meta:
        for slot in op["slots"]:
            if slot["mode"] == "gather" and slot["id_column"] < 0:
                src = out[slot["ids"]["input"]]
                if not src["padded"]:
                    raise ValueError(f"slot {slot['name']!r}: gathers with ids from {slot['ids']['input']!r}, "
                                     "which has no batch dimension")
    return out


def _fill_gather_shapes(lookup_specs, inputs_meta):
    for specs in lookup_specs.values():
        for s in specs:
            if s["shape"] is None:
                slot = s["slot"]
                s["shape"] = list(inputs_meta[slot["ids"]["input"]]["shape"]) + [slot["dim"]]


def _baseline(tf, graph_def, resources, arg_names, input_tensors, inputs_meta, fetches, buckets, work):
    """The original graph lowered whole per bucket, or why it cannot be."""
    if resources:
        return {"reason": "tables too big to freeze stay variables; the whole graph is not lowered with them"}
    sparse = [n for n in arg_names if not inputs_meta[n]["padded"]]
    if sparse:
        return {"reason": f"input {sparse[0]!r} has no batch dimension (a SparseTensor piece): no static shape"}
    g = dense_mod.pruned(graph_def, fetches)
    g, weights = dense_mod.weights_to_placeholders(g)
    modules = {}
    try:
        for b in buckets:
            args = [(input_tensors[n], _shape_at(inputs_meta[n]["shape"], b), inputs_meta[n]["dtype"])
                    for n in arg_names]
            args += [(f"{k}:0", v.shape, v.dtype.name) for k, v in weights.items()]
            g_b, fetch_b = dense_mod.fold_shapes(g, args, fetches)
            left = set(dense_mod.placeholders(g_b))
            missing = [a[0] for a in args[:len(arg_names)] if a[0].split(":")[0] not in left]
            if missing:
                # The module must take every model input, in order, even one only its shape is read from.
                return {"reason": f"the original graph reads only the shape of input {missing[0]!r}"}
            text = dense_mod.lower(g_b, [a for a in args if a[0].split(":")[0] in left], fetch_b)
            with open(os.path.join(work, fmt.baseline_module(b)), "w") as f:
                f.write(text)
            modules[str(b)] = fmt.baseline_module(b)
    except ValueError as e:
        for m in modules.values():
            os.remove(os.path.join(work, m))
        return {"reason": f"XLA cannot compile the original graph: {e}"}
    np.savez(os.path.join(work, fmt.BASELINE_WEIGHTS), **{_npz_key(k): v for k, v in weights.items()})
    return {"modules": modules, "inputs": arg_names, "weights": [_npz_key(k) for k in weights]}


def _verify(bundle_dir: str) -> dict:
    """The bundle on the CPU vs TensorFlow's recorded outputs."""
    try:
        import jax  # noqa: F401
    except ImportError:
        return {"checked": False, "reason": "jax is not installed here"}
    from ..backends import relative_difference
    from .runtime import BundleModel

    model = BundleModel(bundle_dir, device="cpu")
    abs_d = rel_d = 0.0
    for feeds, want in model.test_batches():
        a, r = relative_difference(want, model(feeds))
        abs_d, rel_d = max(abs_d, a), max(rel_d, r)
    return {"checked": True, "device": "cpu", "max_abs_diff": abs_d, "max_rel_diff": rel_d}
