"""Step 2: input_shapes matched to the model's inputs, and the test data:
the user's checked, or generated (ids Zipf-distributed inside each table's
range, so that every generated id is valid for the table it indexes)."""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from ..shapes import InputShape
from .errors import OptimizeError
from .load import Model, strip


def zipf_ids(rng: np.random.Generator, vocab: int, size: int, alpha: float = 1.1) -> np.ndarray:
    """Ids in [0, vocab) drawn from Zipf(alpha) over ranks, hot ids spread over the table.

    numpy's own zipf has unbounded support; this samples the finite
    distribution p(rank k) ~ k^-alpha, then maps ranks to ids through a fixed
    random permutation so that hot rows are not simply the first rows.
    """
    p = np.arange(1, vocab + 1, dtype=np.float64) ** -alpha
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    ranks = np.searchsorted(cdf, rng.random(size), side="right")
    perm = np.random.default_rng(vocab).permutation(vocab)
    return perm[np.minimum(ranks, vocab - 1)].astype(np.int64)


def id_bounds(model: Model, lookups: List[dict]) -> Dict[object, int]:
    """Per input (and per (input, column) where a lookup reads one column):
    the smallest table row count its values index."""
    inputs = model.input_of()
    bounds: Dict[object, int] = {}
    for lk in lookups:
        node, column = lk["feature_key"]      # where the lookup's ids come from (tiemb.rewrite.features)
        if node not in inputs:
            continue
        key = inputs[node] if column is None else (inputs[node], column)
        bounds[key] = min(bounds.get(key, lk["rows"]), lk["rows"])
    return bounds


def generate(model: Model, specs: Dict[str, InputShape], lookups: List[dict], rng) -> List[Dict[str, np.ndarray]]:
    """Test batches from input_shapes: the largest size (timed) and, for
    ranges and discrete sizes, the smallest too. Ids of inputs that feed
    lookups: Zipf(1.1) inside each table's range."""
    bounds = id_bounds(model, lookups)
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


def check_test_data(model: Model, test_data) -> List[Dict[str, np.ndarray]]:
    if not isinstance(test_data, (list, tuple)) or not test_data:
        raise OptimizeError("test_data must be a non-empty list of feed dicts {input name: numpy array}")
    out = []
    for k, feeds in enumerate(test_data):
        if not isinstance(feeds, dict):
            raise OptimizeError(f"test_data[{k}] must be a dict {{input name: numpy array}}, got {type(feeds).__name__}")
        got = {strip(n): np.asarray(v) for n, v in feeds.items()}
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


def check_spec_shapes(model: Model, by_name: Dict[str, InputShape], generated: bool) -> None:
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


def match_specs(model: Model, specs: List[InputShape]) -> Dict[str, InputShape]:
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


def check_generatable(model: Model, lookups: List[dict]) -> None:
    """Random values cannot stand for a sparse tensor's indices or dense shape:
    a model taking SparseTensor pieces needs the user's test data."""
    from ..rewrite.graph import GraphView

    view = GraphView(model.graph_def)
    inputs = model.input_of()
    for lk in lookups:
        for key in ("segment_ids", "num_rows"):
            node, _ = view.skip_identity(*view.producer(lk[key])) if lk.get(key) else (None, 0)
            if node is not None and node.name in inputs:
                raise OptimizeError(f"input '{inputs[node.name]}' holds a sparse tensor's {key.replace('_', ' ')} "
                                    f"(it feeds the lookup of {lk['table']}): random test data cannot stand for it; "
                                    "pass test_data (a list of feed dicts of real batches)")
