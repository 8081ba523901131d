"""``export_bundle``: an optimized model as a bundle a GPU host serves
without TensorFlow (export side: needs TensorFlow)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence

import numpy as np

from . import dense as dense_mod
from . import format as fmt
from .program import operand_key
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
            embedding lookups fused, with fused outputs and pooled dense id
            matrix slots, tables written to the bundle's store) or already
            optimized by tiemb (its store is copied).
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
        overwrite: replace an existing non-empty ``bundle_dir`` (else ValueError).
        verify: load the bundle on the CPU (jax's CPU backend) and compare
            it with TensorFlow on the test data; the difference is recorded.

    Raises ValueError naming what cannot be bundled (a slot whose ids the
    runtime cannot read, a dense part XLA cannot compile, ...).
    """
    from ..config import OptimizeConfig

    if level not in (0, 1):
        raise ValueError(f"level must be 0 or 1, got {level!r}")
    if isinstance(optimization_config, dict):
        optimization_config = OptimizeConfig.from_dict(optimization_config)
    params = (optimization_config or OptimizeConfig()).resolve()
    buckets = buckets_from(batch_sizes, input_shapes, params.get("tiemb/max_batch_size"))
    if os.path.exists(bundle_dir) and os.listdir(bundle_dir) and not overwrite:
        raise ValueError(f"{bundle_dir} exists and is not empty")
    src = _load(model, signature)
    src.batches = test_batches(test_data, src.specs, input_shapes, src.graph_def)
    src.want = [{k: v.numpy() for k, v in src.fn(**{n: src.tf.constant(b[n]) for n in src.arg_names}).items()}
                for b in src.batches]
    parent = os.path.dirname(os.path.abspath(bundle_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".tiemb-bundle-", dir=parent)
    try:
        b = SimpleNamespace(work=work, buckets=buckets, level=level, params=params, model=model)
        _rewrite(src, b)
        _dense(src, b)
        _resize_store(b)
        _lower_buckets(src, b, baseline)
        meta = _write(src, b, signature)
        if verify:
            meta["verified"] = _verify(work)
            fmt.write_meta(work, meta)
        if os.path.exists(bundle_dir):
            shutil.rmtree(bundle_dir)
        shutil.move(work, bundle_dir)
        return meta
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _load(model: str, signature: str) -> SimpleNamespace:
    """The SavedModel's signature, frozen: graph, inputs, outputs."""
    import tensorflow as tf

    from .. import tf_ops
    from ..rewrite.saved_model import freeze_signature

    tf_ops.load()
    sig = freeze_signature(model, signature)
    outputs = sig.outputs
    return SimpleNamespace(tf=tf, loaded=sig.loaded, fn=sig.fn, graph_def=sig.graph_def, resources=sig.resources,
                           specs=sig.fn.structured_input_signature[1], arg_names=sig.arg_names,
                           out_names=sorted(outputs), input_tensors=sig.input_tensors,
                           fetches=[outputs[k] for k in sorted(outputs)])


def _rewrite(src, b) -> None:
    """The lookups fused (or the given model's ops taken as they are), the
    store written, the ops' slots wired to the model's inputs."""
    from .. import _C, tf_ops
    from ..rewrite.sparse_lookup import rewrite_sparse_lookups

    store = os.path.join(b.work, fmt.STORE)
    already = [n for n in src.graph_def.node if n.op == "TiembLookup"]
    # Provisional: the store's manifest is written again below with the ids per sample the wiring shows.
    max_nnz = b.params.get("tiemb/max_nnz") or 1
    b.lookups = None
    if already:
        published = _C.read_store_manifest(os.path.join(b.model, "assets")).get("distributed")
        if published:  # its files hold only the host tiers
            raise ValueError(f"{b.model}: its tables live in a Redis Cluster (tiemb/enable_distributed, namespace "
                             f"{published['namespace']!r}); a bundle carries whole tables: export the model from "
                             "before it was published, or optimize it again without tiemb/enable_distributed")
        shutil.copytree(os.path.join(b.model, "assets"), store)
        b.graph_def, b.ops, b.optimized_input = src.graph_def, [{"name": n.name} for n in already], True
    else:
        b.graph_def, report = rewrite_sparse_lookups(src.graph_def, store, max_batch_size=b.buckets[-1],
                                                     max_nnz=max_nnz, half_tables=b.level >= 1,
                                                     resources=src.resources)
        b.ops, b.optimized_input = report.ops, False
    config_json = json.dumps({k: v for k, v in b.params.items() if v is not None}, indent=1, sort_keys=True)
    if b.ops:   # the store's tiers, where the engines read them
        from .. import store as table_store

        table_store.write_tiers(store, table_store.tiers_from_parameters(b.params))
    with open(os.path.join(b.work, fmt.CONFIG), "w") as f:
        f.write(config_json)
    wiring = discover(b.graph_def, b.ops, src.input_tensors, src.batches)
    b.wiring = wiring
    b.op_meta = _ops_meta(b.graph_def, b.ops, wiring, store)
    b.slot_num = max([len(o["slots"]) for o in b.op_meta] + [1])
    b.max_nnz = b.params.get("tiemb/max_nnz") or _max_nnz(b.op_meta, src.batches)


def _resize_store(b) -> None:
    """The store's engine sizes: the largest bucket's rows (twice that where
    outputs take padded SparseTensor pieces: their spill rows)."""
    from .. import store as table_store

    spill = any(o.get("spill") for op in b.op_meta for o in op["outputs"])
    b.max_batch = b.buckets[-1] * (2 if spill else 1)
    if b.ops:
        table_store.resize_store(os.path.join(b.work, fmt.STORE), max_batch_size=b.max_batch, slot_num=b.slot_num,
                            max_nnz=b.max_nnz)


def _dense(src, b) -> None:
    """The dense part: model inputs it still reads, lookup outputs, weights
    (weights become arguments before the level-1 casts, so that they stay
    float32 on disk and the casts run inside the module)."""
    from .. import backends

    dg = dense_mod.pruned(dense_mod.dense_part(b.graph_def), src.fetches)
    dg, b.weights = dense_mod.weights_to_placeholders(dg)
    b.notes = []
    if b.level >= 1:
        dg, b.notes = backends.apply("tensorflow", dg, b.level)
    b.dense_graph = dg
    present = set(dense_mod.placeholders(dg))
    b.dense_inputs = [n for n in src.arg_names if src.input_tensors[n].split(":")[0] in present]
    padded = _padded_inputs(b.dense_inputs, b.op_meta)
    b.inputs_meta = _inputs_meta(src.specs, src.batches, padded, b.op_meta)
    flat = [(o["name"], k, out) for o in b.op_meta for k, out in enumerate(o["outputs"])]
    for _, _, out in flat:
        out["shape"] = _output_shape(out, b.inputs_meta)
    # Only the lookup outputs the dense part reads are its arguments.
    b.lookup_args = [(i, f"{dense_mod.lookup_placeholder(op, k)}:0", out) for i, (op, k, out) in enumerate(flat)
                     if dense_mod.lookup_placeholder(op, k) in present]
    known = set(b.weights) | {t.split(":")[0] for _, t, _ in b.lookup_args} | \
        {src.input_tensors[i].split(":")[0] for i in b.dense_inputs}
    unread = sorted(present - known)
    if unread:
        raise ValueError(f"the dense part reads placeholder {unread[0]!r}, which is no model input")


def _lower_buckets(src, b, baseline: bool) -> None:
    """One dense module per bucket (and the baseline's), every dot of a
    level-0 module at full float32 precision."""
    tf = src.tf
    prev_tf32 = tf.config.experimental.tensor_float_32_execution_enabled()
    tf.config.experimental.enable_tensor_float_32_execution(False)   # dots lowered at HIGHEST precision
    b.kept = None
    try:
        for bucket in b.buckets:
            args = [(src.input_tensors[n], _shape_at(b.inputs_meta[n]["shape"], bucket), b.inputs_meta[n]["dtype"])
                    for n in b.dense_inputs]
            args += [(t, _shape_at(s["shape"], bucket), s["dtype"]) for _, t, s in b.lookup_args]
            args += [(f"{k}:0", v.shape, v.dtype.name) for k, v in b.weights.items()]
            try:
                g, fetch_b = dense_mod.fold_shapes(b.dense_graph, args, src.fetches)
                left = set(dense_mod.placeholders(g))
                args = [a for a in args if a[0].split(":")[0] in left]
                text = dense_mod.lower(g, args, fetch_b)
            except ValueError as e:
                raise ValueError(f"XLA cannot compile the dense part at batch {bucket}: {e}") from None
            if b.kept is None:
                b.kept = [a[0] for a in args]
            elif b.kept != [a[0] for a in args]:
                raise ValueError(f"the dense part reads other inputs at batch {bucket} than at {b.buckets[0]}")
            bad = dense_mod.dots_not_highest(text) if b.level == 0 else []
            if bad:
                raise ValueError(f"level 0: a dot of the dense module is not at full float32 precision: {bad[0]}")
            with open(os.path.join(b.work, fmt.dense_module(bucket)), "w") as f:
                f.write(text)
        if baseline and b.optimized_input:
            b.baseline = {"reason": "the model given is already optimized: its original graph is not at hand"}
        elif baseline:
            b.baseline = _baseline(tf, src.graph_def, src.resources, src.arg_names, src.input_tensors,
                                   b.inputs_meta, src.fetches, b.buckets, b.work)
        else:
            b.baseline = None
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(prev_tf32)


def _write(src, b, signature: str) -> dict:
    """bundle.json, weights.npz and tests.npz; returns the metadata."""
    want, batches = src.want, src.batches
    outputs_meta = [{"name": k, "dtype": want[0][k].dtype.name, "shape": [-1] + list(want[0][k].shape[1:]),
                     "batched": bool(want[0][k].ndim >= 1 and
                                     all(w[k].shape[0] == _batch_of(x, b.inputs_meta) for w, x in
                                         zip(want, batches)))} for k in src.out_names]
    kept = set(b.kept)
    dense_inputs = [n for n in b.dense_inputs if src.input_tensors[n] in kept]
    lookup_args = [a for a in b.lookup_args if a[1] in kept]
    weights = {k: v for k, v in b.weights.items() if f"{k}:0" in kept}
    meta = {"level": b.level, "buckets": b.buckets, "inputs": b.inputs_meta, "outputs": outputs_meta,
            "ops": b.op_meta,
            "engine": {"max_batch_size": b.max_batch, "slot_num": b.slot_num, "max_nnz": b.max_nnz},
            "dense": {"inputs": dense_inputs, "lookups": [i for i, _, _ in lookup_args],
                      "weights": [_npz_key(k) for k in weights],
                      "modules": {str(x): fmt.dense_module(x) for x in b.buckets}, "notes": b.notes,
                      "precision": "float32 dots at HIGHEST precision" if b.level == 0 else
                      "float16 tables, bfloat16 matmuls"},
            "batch_source": batch_input(b.wiring, [n for n in src.arg_names if b.inputs_meta[n]["padded"]]),
            "baseline": b.baseline, "source_model": os.path.abspath(b.model), "signature": signature,
            "tensorflow": src.tf.__version__}
    if meta["batch_source"] is None:
        raise ValueError("cannot tell a request's batch size: no input has a batch dimension and no slot "
                         "reads a dense_shape")
    np.savez(os.path.join(b.work, fmt.WEIGHTS), **{_npz_key(k): v for k, v in weights.items()})
    fmt.write_tests(b.work, batches, want)
    fmt.write_meta(b.work, meta)
    return meta


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
    width of a gathered or pooled id matrix, 1 for a column, and for
    SparseTensor pieces twice the most the test data shows (set
    ``tiemb/max_nnz`` when requests may carry more)."""
    from .wiring import compute

    most = 1
    for op in op_meta:
        for slot in op["slots"]:
            src = slot["ids"]
            x = batches[0][src["input"]]
            if slot["id_width"] >= 0:
                most = max(most, slot["id_width"] or x.shape[-1] - max(slot["id_column"], 0))
            elif slot["id_column"] >= 0 or src.get("column") is not None:
                continue
            elif slot["mode"] == "gather":
                most = max(most, int(np.prod(x.shape[1:])) if x.ndim > 1 else 1)
            elif slot["segment_ids"] is not None:
                for b in batches:
                    seg = np.asarray(compute(b[slot["segment_ids"]["input"]], slot["segment_ids"]))
                    if seg.size:
                        most = max(most, 2 * int(np.bincount(seg.astype(np.int64)).max()))
    return most


def _ops_meta(graph_def, ops, wiring, store) -> List[dict]:
    """Per op: its slots (table, modes, where each writes, its sources) and
    its outputs (dtype, width; shapes follow once the inputs are known)."""
    nodes = {n.name: n for n in graph_def.node}
    return [_op_meta(nodes[op["name"]], op, wiring[op["name"]], store) for op in ops]


def _op_meta(node, op: dict, wiring: List[dict], store: str) -> dict:
    from tensorflow.python.framework import dtypes

    from .. import _C

    a = node.attr
    n = a["N"].i

    def per_slot(key, kind, default):
        got = list(getattr(a[key].list, kind))
        return got if got else [default] * n

    out_types = [dtypes.as_dtype(t).name for t in a["out_types"].list.type]
    outputs_of = per_slot("slot_outputs", "i", None)
    outputs_of = list(range(n)) if outputs_of[0] is None else outputs_of
    offsets, widths = per_slot("slot_offsets", "i", 0), per_slot("id_widths", "i", -1)
    columns, wrap = per_slot("id_columns", "i", -1), per_slot("wrap_negative", "b", False)
    slots = []
    for s in range(n):
        table = a["tables"].list.s[s].decode()
        rows, dim = _C.read_table_rows(os.path.join(store, table), [])[:2]
        slot = {"name": op["slots"][s] if "slots" in op else f"{node.name}:{s}", "table": table,
                "rows": int(rows), "dim": int(dim), "mode": a["modes"].list.s[s].decode(),
                "combiner": a["combiners"].list.s[s].decode(), "default_id": int(a["default_ids"].list.i[s]),
                "id_column": int(columns[s]), "id_width": int(widths[s]), "wrap_negative": bool(wrap[s]),
                "output": int(outputs_of[s]), "offset": int(offsets[s]), "out_dtype": out_types[outputs_of[s]],
                **{p: wiring[s][p] for p in PARTS}}
        if slot["ids"] is None:
            raise ValueError(f"{node.name} slot {s}: its ids are a constant; nothing to serve")
        slots.append(slot)
    outputs = [{"dtype": t, "slots": [s for s in range(n) if outputs_of[s] == o],
                "width": sum(slots[s]["dim"] for s in range(n) if outputs_of[s] == o)}
               for o, t in enumerate(out_types)]
    return {"name": node.name, "slots": slots, "outputs": outputs}


def _output_shape(out: dict, inputs_meta: dict) -> list:
    """An op output's shape, -1 for the batch: a gather slot alone keeps its
    ids' shape (+ [dim]); every other output is [rows, width]."""
    return out["shape"] if "shape" in out else [-1, out["width"]]


def _padded_inputs(dense_inputs, op_meta) -> Dict[str, object]:
    """Inputs padded to the bucket, with their fill value: those the dense
    part reads and the id matrices slots read (not SparseTensor pieces)."""
    pad = {n: 0 for n in dense_inputs}
    for op in op_meta:
        for slot in op["slots"]:
            if slot["mode"] == "gather" or slot["id_column"] >= 0 or slot["id_width"] >= 0 or \
                    slot["ids"]["kind"] == "column":
                pad.setdefault(slot["ids"]["input"], 0)
    return pad


# What the custom call reads in place (python/xla_ffi.cpp): an input as it
# is, or one column of it (ids, segment ids); weights contiguous.
_READABLE = {"ids": ("values", "column", "masked"), "segment_ids": ("values", "column"), "weights": ("values",)}
# Fill of a SparseTensor piece padded to a bucket's capacity: ids -1 (pruned
# by safe slots), weights 0.
# Padded segment ids go to rows after the bucket's ("spill" rows, max_nnz
# per row: the engine's per-sample limit holds), which the program cuts off.
_FILL = {"ids": -1, "segment_ids": "spill", "weights": 0}


def _inputs_meta(specs, batches, padded, op_meta):
    """Each input's dtype, shape (-1 = any), and how a request is padded:
    ``padded`` (to the bucket, with ``pad``) or ``capacity`` (a SparseTensor
    piece: to bucket * max_nnz entries, with ``fill``). Also fixes each
    slot's ``serve_mode`` and each op's ``operands`` (the inputs it reads)."""
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
                     "pad": padded.get(name, 0), "capacity": False}
    for op in op_meta:
        op["operands"] = []
        for slot in op["slots"]:
            _check_readable(op, slot, out)
        for o in op["outputs"]:
            _spill(op, o, out)
            first = op["slots"][o["slots"][0]]
            if len(o["slots"]) == 1 and first["mode"] == "gather" and first["id_column"] < 0 and \
                    first["ids"]["kind"] == "values":
                o["shape"] = list(out[first["ids"]["input"]]["shape"]) + [first["dim"]]
    return out


def _spill(op: dict, out: dict, inputs: dict) -> None:
    """An output whose slots read SparseTensor pieces has twice the bucket's
    rows (the second half takes the padding; the program slices it off)."""
    pieces = [inputs[op["slots"][s]["ids"]["input"]]["capacity"] for s in out["slots"]]
    if any(pieces) and not all(pieces):
        raise ValueError(f"op {op['name']}: an output fuses slots over SparseTensor pieces with slots over "
                         "batch inputs, which a bundle cannot pad alike; export the model unfused")
    out["spill"] = all(pieces)


def _check_readable(op: dict, slot: dict, inputs: dict) -> None:
    where = f"slot {slot['name']!r} (op {op['name']})"
    for part, kinds in _READABLE.items():
        src = slot[part]
        if src is None or (part == "segment_ids" and (slot["mode"] == "gather" or slot["id_width"] >= 0)):
            continue
        if src["kind"] not in kinds:
            raise ValueError(f"{where}: its {part} are {src['kind']} of input {src['input']!r}, which the bundle's "
                             f"lookup call cannot read in place (it reads {' or '.join(kinds)}); the rewriter "
                             "fuses padded id matrices into the op (pooled slots) where it recognises them")
        spec = inputs[src["input"]]
        if not spec["padded"]:
            spec["capacity"] = True
            spec["fill"] = _FILL[part]
        if operand_key(src) not in op["operands"]:
            op["operands"].append(operand_key(src))
    if slot["ids"]["kind"] == "column" and slot["id_column"] >= 0:
        raise ValueError(f"{where}: reads column {slot['id_column']} of ids that are already a column")
    slot["serve_mode"] = slot["mode"]
    if slot["mode"] == "plain" and inputs[slot["ids"]["input"]]["capacity"]:
        # Padded pieces carry ids -1, which safe mode prunes and plain refuses; with every real
        # id valid, safe mode with the bucket's rows is plain mode's result, zero rows after the last.
        if slot["weights"] is not None and slot["combiner"] != "sum":
            raise ValueError(f"{where}: a weighted {slot['combiner']} lookup over SparseTensor pieces is not "
                             "served by a bundle (its padding would change the result); optimize the model "
                             "for TensorFlow instead (tiemb optimize)")
        slot["serve_mode"] = "safe"


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
