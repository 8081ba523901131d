"""``tiemb.optimize()``: seed 000's interface (also ``tiacc_inference.optimize``).

    output_model, report = tiemb.optimize(input_model, optimization_level, device_type, input_shapes,
                                          input_nodes_names=None, output_nodes_names=None, test_data=None,
                                          save_path=None, optimization_config=None)

Find the lookups, fuse them, pick the dense backend, check the outputs, time
both models side by side, report. See README "optimize()" for every argument.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .bench.timing import alternate
from . import _files
from .config import ConfigError, OptimizeConfig
from .report import OptimizedReport, hardware_environment, optimization_result, software_environment
from .shapes import InputShape, parse_input_shapes

GRAPH_SINK_SKIP = {"NoOp", "Assert", "Const", "Placeholder", "PlaceholderWithDefault", "SaveV2", "RestoreV2",
                   "MergeV2Checkpoints", "VarHandleOp", "AssignVariableOp"}


class OptimizeError(ValueError):
    """optimize() cannot do what was asked; the message says why."""


@dataclass
class _Model:
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
    keep: list = field(default_factory=list)    # objects that back the functions


def _device(device_type) -> str:
    if device_type in (0, "gpu", "GPU"):
        return "gpu"
    if device_type in (1, "cpu", "CPU"):
        return "cpu"
    raise OptimizeError(f"device_type must be 0 or 'gpu' (GPU), 1 or 'cpu' (CPU), got {device_type!r}")


def _kind(input_model) -> str:
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


def _load(input_model, kind: str, input_names, output_names) -> _Model:
    import tensorflow as tf

    from .rewrite.saved_model import _freeze

    if kind == "saved_model":
        path = os.fspath(input_model)
        try:
            loaded = tf.saved_model.load(path)
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise OptimizeError(f"cannot load a SavedModel from {path}: {e}") from None
        if "serving_default" not in loaded.signatures:
            raise OptimizeError(f"{path} has no signature 'serving_default'; it has {sorted(loaded.signatures)}")
        fn = loaded.signatures["serving_default"]
        specs = fn.structured_input_signature[1]
        names = sorted(specs)
        frozen, resources = _freeze(fn, 64 << 20)
        outputs = sorted(fn.structured_outputs)
        m = _Model(kind, names, {n: specs[n].dtype.name for n in names},
                   {n: specs[n].shape.as_list() if specs[n].shape.rank is not None else None for n in names},
                   outputs, frozen.graph.as_graph_def(), resources,
                   {n: t.name.split(":")[0] for n, t in zip(names, frozen.inputs)}, path, [loaded, fn])
    else:
        graph_def = input_model
        path = None
        if kind == "frozen":
            from .rewrite.frozen_graph import read_graph_def

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
        m = _Model(kind, [n.name for n in placeholders], dtypes, shapes, sinks, graph_def, {},
                   {n.name: n.name for n in placeholders}, path)
    if input_names is not None:
        unknown = [n for n in input_names if _strip(n) not in m.inputs]
        if unknown:
            raise OptimizeError(f"input_nodes_names {unknown} do not exist; the model's inputs are {m.inputs}")
        m.inputs = [_strip(n) for n in input_names]
    if output_names is not None:
        if kind == "saved_model":
            unknown = [n for n in output_names if n not in m.outputs]
        else:
            names = {n.name for n in m.graph_def.node}
            unknown = [n for n in output_names if _strip(n) not in names]
        if unknown:
            listing = m.outputs if kind == "saved_model" else sorted(m.outputs)
            raise OptimizeError(f"output_nodes_names {unknown} do not exist; the model's outputs are {listing}")
        m.outputs = [n if kind == "saved_model" else _strip(n) for n in output_names]
    if not m.outputs:
        raise OptimizeError("the model has no outputs to compare; pass output_nodes_names")
    return m


def _strip(name: str) -> str:
    return name[:-2] if name.endswith(":0") else name


def _graph_fn(graph_def, inputs: Sequence[str], outputs: Sequence[str], store: Optional[str], dtypes):
    """A callable feed dict -> output dict running a GraphDef."""
    import tensorflow as tf

    def imported(*args):
        input_map = {f"{n}:0": a for n, a in zip(inputs, args)}
        if store:
            input_map["tiemb/store:0"] = tf.constant(store)
        return tf.compat.v1.import_graph_def(graph_def, input_map=input_map,
                                             return_elements=[o if ":" in o else f"{o}:0" for o in outputs], name="")

    fn = tf.compat.v1.wrap_function(imported, [tf.TensorSpec(None, tf.as_dtype(dtypes[n])) for n in inputs])

    def run(feeds):
        return {o: v.numpy() for o, v in zip(outputs, fn(*[tf.constant(feeds[n]) for n in inputs]))}
    return run


def _saved_fn(fn, outputs):
    import tensorflow as tf

    def run(feeds):
        result = fn(**{k: tf.constant(v) for k, v in feeds.items()})
        return {o: result[o].numpy() for o in outputs}
    return run


# ----------------------------------------------------------------- test data

def _id_bounds(model: _Model, lookups: List[dict]) -> Dict[object, int]:
    """Per input (and per (input, column) where a lookup reads one column):
    the smallest table row count its values index."""
    inputs = _input_of(model)
    bounds: Dict[object, int] = {}
    for lk in lookups:
        node, column = lk["feature_key"]      # where the lookup's ids come from (tiemb.rewrite.features)
        if node not in inputs:
            continue
        key = inputs[node] if column is None else (inputs[node], column)
        bounds[key] = min(bounds.get(key, lk["rows"]), lk["rows"])
    return bounds


def _generate(model: _Model, specs: Dict[str, InputShape], lookups: List[dict], rng) -> List[Dict[str, np.ndarray]]:
    """Test batches from input_shapes: the largest size (timed) and, for
    ranges and discrete sizes, the smallest too. Ids of inputs that feed
    lookups: Zipf(1.1) inside each table's range."""
    from .bench.data import zipf_ids

    bounds = _id_bounds(model, lookups)
    # The smallest sizes too when every input varies (a fixed input would not match them).
    sizes = ["max"] + (["min"] if all(s.kind != "fixed" for s in specs.values()) else [])
    batches = []
    for which in sizes:
        feeds = {}
        for name in model.inputs:
            spec = specs[name]
            shape = spec.max_shape if which == "max" else spec.min_shape
            dtype = _input_dtype(name, spec.dtype, model.input_dtypes.get(name))
            if dtype.startswith("int") or dtype.startswith("uint"):
                whole = bounds.get(name, 1000)
                if len(shape) >= 2:
                    cols = [zipf_ids(rng, bounds.get((name, c), whole), int(np.prod(shape)) // shape[1])
                            for c in range(shape[1])]
                    value = np.stack(cols, 1).reshape(shape)
                else:
                    value = zipf_ids(rng, whole, int(np.prod(shape))).reshape(shape)
                feeds[name] = value.astype(dtype)
            elif dtype in ("string",):
                feeds[name] = rng.choice(np.array([f"v{k}".encode() for k in range(100)]), shape)
            elif dtype == "bool":
                feeds[name] = rng.random(shape) < 0.5
            else:
                feeds[name] = rng.random(shape, dtype=np.float32).astype(dtype)
        batches.append(feeds)
    return batches


def _input_dtype(name: str, given: Optional[str], model_dtype: Optional[str]) -> str:
    """The dtype to generate: the model's, where input_shapes names the same
    kind (seed 000's 'int' is any integer width); a different kind is an error."""
    if given is None or model_dtype is None:
        return given or model_dtype or "float32"

    def kind(d):
        return "int" if d.startswith(("int", "uint")) else "float" if d.startswith(("float", "bfloat", "half")) else d

    if kind(given) != kind(model_dtype):
        raise OptimizeError(f"input_shapes says {name} is {given}, but the model's input {name} is {model_dtype}")
    return model_dtype


def _check_test_data(model: _Model, test_data) -> List[Dict[str, np.ndarray]]:
    if not isinstance(test_data, (list, tuple)) or not test_data:
        raise OptimizeError("test_data must be a non-empty list of feed dicts {input name: numpy array}")
    out = []
    for k, feeds in enumerate(test_data):
        if not isinstance(feeds, dict):
            raise OptimizeError(f"test_data[{k}] must be a dict {{input name: numpy array}}, got {type(feeds).__name__}")
        got = {_strip(n): np.asarray(v) for n, v in feeds.items()}
        missing = [n for n in model.inputs if n not in got]
        extra = [n for n in got if n not in model.inputs]
        if missing or extra:
            raise OptimizeError(f"test_data[{k}]: inputs {missing} missing and {extra} unknown; the model's inputs "
                                f"are {model.inputs}")
        out.append({n: got[n] for n in model.inputs})
    return out


# The most test data optimize() generates from input_shapes (all inputs, all
# generated batches together); larger asks are an error that says to pass
# test_data or smaller shapes, not a run out of memory.
MAX_GENERATED_BYTES = 1 << 30


def _check_spec_shapes(model: _Model, by_name: Dict[str, InputShape], generated: bool) -> None:
    """Every input_shapes entry against the model's input (rank and fixed
    dimensions: a width or order mistake is named here, in one line, not as a
    graph execution error at the first run), and the size of the data to
    generate against MAX_GENERATED_BYTES."""
    total = 0
    for name, spec in by_name.items():
        want = model.input_shapes.get(name)
        for shape in spec.shapes:
            if want is None:
                continue
            if len(shape) != len(want) or any(w is not None and w != d for w, d in zip(want, shape)):
                model_shape = str(tuple(want))
                raise OptimizeError(f"input_shapes gives {name} the shape {'*'.join(map(str, shape))}, but the "
                                    f"model's input {name} has shape {model_shape} (positional entries follow the "
                                    f"order {model.inputs})")
        dtype = spec.dtype or model.input_dtypes.get(name) or "float32"
        try:
            itemsize = np.dtype(dtype if dtype != "bfloat16" else "float16").itemsize
        except TypeError:
            itemsize = 8       # strings and other kinds: a pointer's worth, at least
        total += sum(int(np.prod(s, dtype=np.float64)) * itemsize for s in {spec.max_shape, spec.min_shape})
    if generated and total > MAX_GENERATED_BYTES:
        raise OptimizeError(f"input_shapes asks for {total / 1e9:.3g} GB of generated test data, more than the "
                            f"{MAX_GENERATED_BYTES >> 20} MB optimize() generates; pass test_data, or smaller "
                            "input_shapes (the serving batch size, not the data set)")


def _match_specs(model: _Model, specs: List[InputShape]) -> Dict[str, InputShape]:
    named = [s for s in specs if s.name is not None]
    if named and len(named) != len(specs):
        raise OptimizeError("input_shapes mixes named and positional entries")
    if named:
        unknown = [s.name for s in specs if s.name not in model.inputs]
        if unknown:
            raise OptimizeError(f"input_shapes names {unknown}, which are not inputs; the model's inputs are "
                                f"{model.inputs}")
        by_name = {s.name: s for s in specs}
        missing = [n for n in model.inputs if n not in by_name]
        if missing:
            raise OptimizeError(f"input_shapes has no entry for inputs {missing}")
        return by_name
    if len(specs) != len(model.inputs):
        raise OptimizeError(f"input_shapes has {len(specs)} entries but the model has {len(model.inputs)} inputs "
                            f"{model.inputs} (positional entries follow that order)")
    return dict(zip(model.inputs, specs))


# ----------------------------------------------------------------- engine sizes

SIZE_MEANING = {"tiemb/max_batch_size": "samples per call (a sparse input: dense_shape[0], never its number of ids)",
                "tiemb/slot_num": "features (distinct id inputs) one fused op serves; tables looked up with the same "
                                  "ids count once",
                "tiemb/max_nnz": "ids per sample per feature (a dense id matrix: its width)"}


def _input_of(model: _Model) -> Dict[str, str]:
    """placeholder node -> the model input it is."""
    return {p: name for name, p in model.placeholder_of.items()}


def _check_generatable(model: _Model, lookups: List[dict]) -> None:
    """Random values cannot stand for a sparse tensor's indices or dense shape:
    a model taking SparseTensor pieces needs the user's test data."""
    from .rewrite.graph import GraphView

    view = GraphView(model.graph_def)
    inputs = _input_of(model)
    for lk in lookups:
        for key in ("segment_ids", "num_rows"):
            node, _ = view.skip_identity(*view.producer(lk[key])) if lk.get(key) else (None, 0)
            if node is not None and node.name in inputs:
                raise OptimizeError(f"input '{inputs[node.name]}' holds a sparse tensor's {key.replace('_', ' ')} "
                                    f"(it feeds the lookup of {lk['table']}): random test data cannot stand for it; "
                                    "pass test_data (a list of feed dicts of real batches)")


def _tensor_values(model: _Model, names: List[str], batches, graph_def=None) -> List[Dict[str, np.ndarray]]:
    """The values of tensors ``names`` of ``graph_def`` (default the model's
    graph; or its rewrite, which holds every fused op's inputs) on each batch."""
    import tensorflow as tf

    from . import tf_ops

    placeholders = [model.placeholder_of[n] for n in model.inputs]
    tf_ops.load()      # a rewritten graph holds TiembLookup nodes (never run here)

    def imported():
        tf.compat.v1.import_graph_def(model.graph_def if graph_def is None else graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    g = wrapped.graph
    fn = wrapped.prune([g.get_tensor_by_name(f"{p}:0") for p in placeholders],
                       [g.get_tensor_by_name(t if ":" in t else f"{t}:0") for t in names])
    out = []
    for b in batches:
        values = fn(*[tf.constant(b[n]) for n in model.inputs])
        out.append({t: v.numpy() for t, v in zip(names, values)})
    return out


def _engine_sizes(model: _Model, rewritten, found, batches, params: dict, specs: Dict[str, InputShape]):
    """tiemb/max_batch_size, slot_num and max_nnz: given ones checked, missing
    ones inferred, from the fused ops' own inputs in ``rewritten`` (the
    rewriter's graph) on the test data (see tiemb.sizes)."""
    from . import sizes as engine

    inputs = _input_of(model)
    lookups = found.lookups
    for lk in lookups:          # name features after the model's inputs, not its placeholders
        node, column = lk["feature_key"]
        if node in inputs:
            lk["feature"] = inputs[node] if column is None else f"{inputs[node]}[:, {column}]"
    values = _tensor_values(model, engine.lookup_tensors(lookups), batches, rewritten) if lookups else \
        [{} for _ in batches]
    widths, declared = [], 0
    for b, batch in enumerate(batches):
        width = {}
        for lk in lookups:
            node, column = lk["feature_key"]
            feed = batch.get(inputs.get(node, ""))
            if feed is None:
                continue
            if column is None and feed.ndim == 2:
                width[lk["feature"]] = feed.shape[1]
            # A dense id input's leading dimension is its batch: input_shapes may declare a larger one.
            spec = specs.get(inputs[node])
            if feed.ndim and spec is not None and spec.max_shape and \
                    engine.sample_counts(lk, values[b])[0] == feed.shape[0]:
                declared = max(declared, spec.max_shape[0])
        widths.append(width)
    need = engine.measure(lookups, values, widths)
    need["tiemb/slot_num"] = engine.features_per_op(lookups, found.ops)
    given = {k: params[k] for k in engine.KEYS}
    return engine.engine_sizes(given, need, extra_batch=declared)


def _cache_report(model: _Model, rewritten, lookups: List[dict], batches, params: dict, device: str) -> dict:
    """The report's ``cache`` field: the tier settings, what applies to this
    serving target, and, with the user's test data, the GPU cache hit rate
    per table that ``tiemb advise`` simulates at the configured
    cache_percentage and the smallest cache_percentage reaching 95%."""
    pct, cpu = params["tiemb/cache_percentage"], params["tiemb/cpu_cache_percentage"]
    out = {"gpu_cache_percentage": pct, "cpu_cache_percentage": cpu,
           "hit_rate_threshold": params["tiemb/hit_rate_threshold"], "hit_rate": None}
    if device == "cpu":
        out["tiers"] = ("CPU serving: every table is resident in host memory (served from there, hit rate 1); "
                        "the GPU cache and backing-store tiers do not apply")
    else:
        out["tiers"] = (f"GPU serving: tables with cache_percentage {pct} < 1 are tiered (GPU cache, "
                        f"{cpu:.0%} of rows in pinned host memory, the rest from a backing file)")
    if not batches:
        out["note"] = "pass test_data (real batches) for the GPU cache hit rates tiemb advise expects"
        return out
    from . import advise

    tables, traffic = advise.model_traffic(model, lookups, batches, rewritten)
    sim = {}
    for t in tables:
        if t.name not in traffic:
            continue
        try:
            a = advise.advise_table(t, traffic[t.name], 0.95, cpu, max_ids=params["tiemb/max_batch_size"] *
                                    params["tiemb/max_nnz"], source="test_data")
        except advise.AdviseError as e:  # the model ran on these ids, so this is ours to report, not to raise
            sim[t.name] = {"error": str(e)}
            continue
        at = advise.simulate(t, traffic[t.name], pct, cpu, warmup=a["warmup_batches"])
        sim[t.name] = {"expected_hit_rate": at["hit_rate"], "host_hit_rate": at["host_hit_rate"],
                       "backing_hit_rate": at["backing_hit_rate"],
                       "recommended_cache_percentage": a["recommended"]["cache_percentage"],
                       "recommended_hit_rate": a["recommended"]["hit_rate"],
                       "recommended_gpu_bytes": a["recommended"]["gpu_bytes"], "note": a["note"]}
    out["simulated"] = {"tables": sim, "target_hit_rate": 0.95, "batches": len(batches),
                        "method": "tiemb advise: the GPU engine's cache policy simulated on the CPU over the test "
                                  "data, hits counted after the first half of the batches (few batches understate a "
                                  "warm server's hit rate)"}
    return out


# ----------------------------------------------------------------- timing

def _stats(seconds: List[float]) -> dict:
    ms = [s * 1e3 for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "runs": len(ms)}


# ----------------------------------------------------------------- optimize

def optimize(input_model, optimization_level, device_type, input_shapes, input_nodes_names=None,
             output_nodes_names=None, test_data=None, save_path=None, optimization_config=None, *,
             overwrite: bool = False, runs: int = 50, seed: int = 0, progress: Optional[Callable] = None):
    """Optimizes a TensorFlow recommender model; returns (output_model, report).

    Args (seed 000's, in its order):
        input_model: SavedModel directory, frozen graph ``.pb`` path, or a GraphDef.
        optimization_level: 0 lossless, 1 float16 tables + bfloat16 dense matmuls.
        device_type: 0 or "gpu", 1 or "cpu". GPU where TensorFlow sees none is an error.
        input_shapes: every form of seeds 000 and 001 (see :func:`tiemb.parse_input_shapes`).
        input_nodes_names / output_nodes_names: inferred when None (signature,
            or placeholders and sinks of a graph); unknown names are errors.
        test_data: list of feed dicts; None: generated from input_shapes.
        save_path: SavedModel directory (SavedModel input) or ``.pb`` file
            (frozen graph / GraphDef input; its table store goes beside it as
            ``<file>.store/``). None: a new temporary directory, named in the
            report. An existing non-empty path needs ``overwrite=True``.
        optimization_config: :class:`tiemb.OptimizeConfig`.

    Returns:
        (output_model, OptimizedReport): a SavedModel input gives the loaded
        optimized model object (``tf.saved_model.load``); a ``.pb`` or a
        GraphDef gives the optimized GraphDef.
    """
    import tensorflow as tf

    from . import backends, tf_ops
    from .rewrite import rewrite_frozen_graph, rewrite_saved_model
    from .rewrite.frozen_graph import read_graph_def, store_path
    from .rewrite.sparse_lookup import rewrite_sparse_lookups

    say = progress or (lambda *a: None)
    if optimization_level not in (0, 1):
        raise OptimizeError(f"optimization_level must be 0 (lossless) or 1 (FP16), got {optimization_level!r}")
    device = _device(device_type)
    notes = []
    if device == "gpu":
        if not tf.config.list_physical_devices("GPU"):
            raise OptimizeError("device_type asks for a GPU but TensorFlow sees none here; use device_type=1 (CPU)")
        notes.append("the fused lookups are placed on the GPU: TiembLookup's GPU kernel on the GPU engine")
    cfg = (optimization_config or OptimizeConfig())
    if not isinstance(cfg, OptimizeConfig):
        raise OptimizeError(f"optimization_config must be a tiemb.OptimizeConfig, got {type(cfg).__name__}")
    params = cfg.resolve()
    if output_nodes_names is None and params.get("output_names"):
        output_nodes_names = params["output_names"]
    specs = parse_input_shapes(input_shapes)
    kind = _kind(input_model)
    model = _load(input_model, kind, input_nodes_names, output_nodes_names)
    by_name = _match_specs(model, specs)
    _check_spec_shapes(model, by_name, generated=test_data is None)

    # What the rewriter finds (for the engine sizes and the generated data).
    rewritten, found = rewrite_sparse_lookups(model.graph_def, None, max_batch_size=1, max_nnz=1, resources=model.resources)
    rng = np.random.default_rng(seed)
    if test_data is None:
        _check_generatable(model, found.lookups)
        batches = _generate(model, by_name, found.lookups, rng)
        source = "tiacc provided"
    else:
        batches = _check_test_data(model, test_data)
        source = "user provided"
    sizes, inferred = _engine_sizes(model, rewritten, found, batches, params, by_name)
    params.update(sizes)
    config_json = __import__("json").dumps({k: v for k, v in params.items()}, indent=2, sort_keys=True)

    # Where the result goes: a sibling temporary path, moved into place at the end.
    if save_path is None:
        base = tempfile.mkdtemp(prefix="tiemb-optimized-")
        save_path = os.path.join(base, "model" if kind == "saved_model" else "model.pb")
        notes.append(f"no save_path: the optimized model was written to {save_path}")
    save_path = os.fspath(save_path)
    if kind == "saved_model" and save_path.endswith(".pb"):
        raise OptimizeError(f"save_path {save_path} is a .pb file but the input is a SavedModel: the output is a "
                            "SavedModel directory")
    if kind != "saved_model" and not save_path.endswith(".pb"):
        raise OptimizeError(f"save_path {save_path} must be a .pb file: the input is a frozen graph")
    if os.path.exists(save_path) and (os.path.isfile(save_path) or os.listdir(save_path)) and not overwrite:
        raise OptimizeError(f"save_path {save_path} exists and is not empty; pass overwrite=True (CLI: --overwrite)")
    parent = os.path.dirname(os.path.abspath(save_path))
    os.makedirs(parent, exist_ok=True)
    # SIGTERM (a supervisor stopping the job) unwinds like Ctrl-C, so the
    # `finally` below removes the work directory; SIGKILL leaves it to the
    # next run's new_work_dir.
    guard = _files.terminate_as_interrupt()
    guard.__enter__()
    try:
        work = _files.new_work_dir(parent)
    except BaseException:
        guard.__exit__(None, None, None)
        raise
    try:
        say("optimizing")
        tf_ops.load()
        max_b, max_n = sizes["tiemb/max_batch_size"], sizes["tiemb/max_nnz"]
        if kind == "saved_model":
            staged = os.path.join(work, "model")
            rewrite = rewrite_saved_model(model.path, staged, max_batch_size=max_b, max_nnz=max_n,
                                          slot_num=sizes["tiemb/slot_num"],
                                          level=optimization_level, device=device, test_batches=batches[:2],
                                          store_files={"tiemb_config.json": config_json})
            optimized = tf.saved_model.load(staged)
            original_run = _saved_fn(model.keep[1], model.outputs)
            optimized_run = _saved_fn(optimized.signatures["serving_default"], model.outputs)
        else:
            src = model.path
            if kind == "graphdef":
                src = os.path.join(work, "input.pb")
                with open(src, "wb") as f:
                    f.write(model.graph_def.SerializeToString())
            staged = os.path.join(work, "model.pb")
            rewrite = None
            for backend in ("tensorflow", "tensorflow-fp32") if optimization_level else ("tensorflow",):
                rewrite = rewrite_frozen_graph(src, staged, max_batch_size=max_b, max_nnz=max_n,
                                               slot_num=sizes["tiemb/slot_num"],
                                               level=optimization_level, backend=backend, overwrite=True,
                                               store_files={"tiemb_config.json": config_json}, device=device)
                optimized_gd = read_graph_def(staged)
                optimized_run = _graph_fn(optimized_gd, model.inputs, model.outputs,
                                          os.path.abspath(store_path(staged)), model.input_dtypes)
                original_run = _graph_fn(model.graph_def, model.inputs, model.outputs, None, model.input_dtypes)
                rel = max(backends.relative_difference(original_run(b), optimized_run(b))[1] for b in batches)
                if rel <= backends.TOLERANCE[optimization_level]:
                    break
                rewrite.dense.setdefault("dropped_backends", []).append(
                    {"name": backend, "reason": f"outputs differ by {rel:.3g} relative, beyond level "
                                                f"{optimization_level}'s tolerance"})
            optimized = optimized_gd
        # Accuracy on every batch, then the timing on the first (largest) one.
        abs_d = rel_d = 0.0
        for b in batches:
            a, r = backends.relative_difference(original_run(b), optimized_run(b))
            abs_d, rel_d = max(abs_d, a), max(rel_d, r)
        tol = backends.TOLERANCE[optimization_level]
        if rel_d > tol:
            raise OptimizeError(f"the optimized model's outputs differ by {rel_d:.3g} relative (level "
                                f"{optimization_level} allows {tol:g}); nothing was written")
        # Into place: an existing model is swapped out atomically (kept in
        # `work` until the new one has passed its check there).
        abs_d, rel_d, optimized_run, output_model = _into_place(
            kind, staged, save_path, model, original_run, batches, tol, optimization_level)
        dist_info = _publish_distributed(save_path, params, model, found, batches, rewritten)
        say("timing")
        timed = batches[0]
        base_s, opt_s = alternate([lambda: original_run(timed), lambda: optimized_run(timed)], runs,
                                  progress=(lambda i, n: say("timing", i, n)) if progress else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        guard.__exit__(None, None, None)

    batch = next(iter(timed.values())).shape[0] if next(iter(timed.values())).ndim else 1
    b, o = _stats(base_s), _stats(opt_s)
    report = OptimizedReport(
        software_environment=software_environment(),
        hardware_environment=hardware_environment(device),
        test_data_info={"test_data_source": source,
                        "test_data_shape": ", ".join(f"{n}: {tuple(v.shape)}" for n, v in timed.items()),
                        "test_data_type": ", ".join(f"{n}: {v.dtype}" for n, v in timed.items())},
        optimization_result=optimization_result(b["median_ms"], o["median_ms"], batch),
        timing={"baseline": b, "optimized": o, "batch": batch, "warmup_runs": 5,
                "speedup": b["median_ms"] / o["median_ms"], "method": "alternating calls, one process, medians"},
        accuracy={"max_abs_diff": abs_d, "max_rel_diff": rel_d, "tolerance": tol, "batches": len(batches)},
        rewrite={k: v for k, v in rewrite.as_dict().items() if k != "dense"},
        dense_backend=rewrite.dense,
        cache=_cache_report(model, rewritten, found.lookups, batches if source == "user provided" else None, params,
                            device),
        config={"values": params, "inferred": inferred, "saved_as": "tiemb_config.json in the table store",
                "meaning": SIZE_MEANING},
        notes=notes + ([rewrite.note] if rewrite.note else []))
    if dist_info:
        report.cache["distributed"] = dist_info
    report_path = os.path.join(save_path, "tiemb_report.json") if kind == "saved_model" else save_path + ".report.json"
    report.save(report_path)
    report.notes.append(f"report saved to {report_path}")
    return output_model, report


def _publish_distributed(save_path, params, model, found, batches, rewritten):
    """tiemb/enable_distributed: the optimized model's tables into the cluster
    (tiemb/distributed), host tier by the test data's traffic; else None."""
    if not params["tiemb/enable_distributed"]:
        return None
    from . import advise, distributed

    return distributed.publish_for_optimize(
        save_path, params, lambda: advise.model_traffic(model, found.lookups, batches, rewritten)[1])


def _into_place(kind, staged, save_path, model, original_run, batches, tol, level):
    """Moves the staged model (and a .pb's store) to save_path, replacing an
    existing one atomically, then checks the outputs of the model now at
    save_path against the original's on every batch: the returned model and
    the report's accuracy are those of what is at save_path. When that check
    fails the old model is put back. Returns (max abs diff, max rel diff, the
    optimized model's run function, the output model)."""
    import tensorflow as tf

    from . import backends
    from .rewrite.frozen_graph import read_graph_def, store_path

    moved = []     # (path now holding the old one or nothing, its place)
    try:
        if kind == "saved_model":
            had_old = _files.replace(staged, save_path)
            moved.append((staged, save_path, had_old))
            output_model = tf.saved_model.load(save_path)
            optimized_run = _saved_fn(output_model.signatures["serving_default"], model.outputs)
        else:
            store = store_path(save_path)
            if os.path.isdir(store_path(staged)):
                moved.append((store_path(staged), store, _files.replace(store_path(staged), store)))
            elif os.path.lexists(store):
                os.rename(store, store_path(staged))      # the old store goes with the old graph
                moved.append((store_path(staged), store, "removed"))
            moved.append((staged, save_path, _files.replace(staged, save_path)))
            final_gd = read_graph_def(save_path)
            optimized_run = _graph_fn(final_gd, model.inputs, model.outputs, os.path.abspath(store),
                                      model.input_dtypes)
            output_model = _with_store(final_gd, os.path.abspath(store))
        abs_d = rel_d = 0.0
        for b in batches:
            a, r = backends.relative_difference(original_run(b), optimized_run(b))
            abs_d, rel_d = max(abs_d, a), max(rel_d, r)
        if rel_d > tol:
            raise OptimizeError(f"the optimized model at {save_path} gives outputs that differ by {rel_d:.3g} "
                                f"relative (level {level} allows {tol:g}); the previous contents were restored")
        return abs_d, rel_d, optimized_run, output_model
    except BaseException:
        # Put back what was there (the new model goes back to `work`, removed with it).
        for held, place, had_old in reversed(moved):
            if had_old == "removed":
                os.rename(held, place)
            elif had_old:
                _files.replace(held, place)
            elif os.path.lexists(place):
                os.rename(place, held)
        raise


def _with_store(graph_def, store: str):
    """The GraphDef with its store constant pointing at ``store`` (a GraphDef
    object has no place for assets: its ops read this path)."""
    from tensorflow.python.framework import tensor_util

    for n in graph_def.node:
        if n.name == "tiemb/store" and n.op == "Const":
            n.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(np.array(store.encode(), dtype=object)))
    return graph_def


def inspect(input_model, input_nodes_names=None, output_nodes_names=None) -> dict:
    """Inputs, outputs and every embedding subgraph the rewriter finds (idiom,
    slot, table shape, combiner) and what it would leave alone; changes nothing."""
    from .rewrite.sparse_lookup import rewrite_sparse_lookups

    kind = _kind(input_model)
    model = _load(input_model, kind, input_nodes_names, output_nodes_names)
    _, report = rewrite_sparse_lookups(model.graph_def, None, max_batch_size=1, max_nnz=1, resources=model.resources)
    return {"kind": kind,
            "inputs": [{"name": n, "dtype": model.input_dtypes[n], "shape": model.input_shapes[n]}
                       for n in model.inputs],
            "outputs": model.outputs,
            "lookups": [{"slot": k, "idiom": lk["idiom"], "output": lk["output"], "table": lk["table"],
                         "table_shape": [lk["rows"], lk["dim"]], "dtype": lk["dtype"], "combiner": lk["combiner"],
                         "weighted": lk["weighted"], "feature": lk["feature"]} for k, lk in enumerate(report.lookups)],
            "features": report.features,
            "found": report.found, "replaceable": report.replaced, "left_alone": report.left_alone,
            "note": report.note}
