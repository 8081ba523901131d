"""Test feeds for an export: the caller's, or generated from the signature."""

from __future__ import annotations

from typing import List

import numpy as np


def test_batches(test_data, specs, input_shapes, graph_def) -> List[dict]:
    """The export's test feeds: ``test_data`` checked against the signature
    ``specs`` (a dict or a list of dicts), else two generated batches (3 and
    8 rows): ids below the smallest table's row count (valid for every
    lookup), floats from a normal distribution; dimensions the signature
    leaves open come from ``input_shapes``."""
    if test_data is not None:
        batches = [test_data] if isinstance(test_data, dict) else list(test_data)
        for b in batches:
            if set(b) != set(specs):
                raise ValueError(f"test data feeds {sorted(b)}, but the model's inputs are {sorted(specs)}")
        return [{k: np.asarray(v) for k, v in b.items()} for b in batches]
    from tensorflow.python.framework import tensor_util

    # Ids below the smallest table's row count are valid for every lookup.
    rows = [tensor_util.MakeNdarray(n.attr["value"].tensor).shape[0] for n in graph_def.node
            if n.op == "Const" and len(n.attr["value"].tensor.tensor_shape.dim) == 2]
    top = max(1, min(rows)) if rows else 1
    given = {s.name: s for s in (input_shapes or []) if s.name}
    rng = np.random.default_rng(0)
    out = []
    for batch in (3, 8):
        feeds = {}
        for name, spec in specs.items():
            dims = spec.shape.as_list() if spec.shape.rank is not None else None
            if dims is None or any(d is None for d in dims[1:]):
                if name not in given:
                    raise ValueError(f"input {name!r} has shape {dims}: give test_data or its --input-shapes")
                dims = list(given[name].max_shape)
            dims = [batch] + [int(d) for d in dims[1:]] if dims else []
            dtype = spec.dtype.as_numpy_dtype
            if spec.dtype.is_integer:
                feeds[name] = rng.integers(0, top, size=dims).astype(dtype)
            else:
                feeds[name] = rng.standard_normal(dims).astype(dtype)
        out.append(feeds)
    return out
