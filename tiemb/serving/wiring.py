"""Which model input feeds each lookup slot (export side: needs TensorFlow).

A TiembLookup op's inputs (ids, segment ids, weights, row counts) are
computed from the model's inputs by whatever the model's authors wrote: an
Identity, a Cast, ``sp_ids.indices[:, 0]``, or feature columns' dense-to-sparse
conversion (``NotEqual``/``Where``/``GatherNd``). The bundle runs without
TensorFlow, so each op input must be one of a few *sources* the runtime can
compute from one model input ``x`` with numpy or cupy:

=================  ===========================================================
``values``         ``x`` itself (gather slots keep its shape, others ravel it)
``column``         ``x[:, c]`` (``sp_ids.indices[:, 0]``)
``masked``         ``where(x != ignore, x, -1)`` (Keras masked pooling: a padded
                   id matrix whose padding becomes -1, pruned by a pooled slot)
``present_values`` ``x[x != ignore]`` (a padded id matrix, feature columns),
                   or of its column c when ``column`` is set
``present_rows``   the row index of each of those (``np.nonzero(x != ignore)[0]``)
``batch``          ``x.shape[0]`` (a row count from a dense input's shape)
``first``          ``x[0]`` (a row count from a ``dense_shape`` input)
=================  ===========================================================

Sources are found by structure (the one placeholder upstream, a ``Where``
upstream or not) and then *verified*: TensorFlow computes the op's inputs on
the test batches, and a source is taken only when it reproduces them exactly
on every batch. Anything else is an error naming the slot and the op input.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from ..rewrite.graph import GraphView, split_input

PARTS = ("ids", "segment_ids", "weights", "num_rows")


def compute(x: np.ndarray, source: dict, xp=np):
    """The value a source describes, from model input ``x`` (numpy or cupy via ``xp``)."""
    kind = source["kind"]
    if kind == "values":
        return x
    if kind == "column":
        return x[:, source["column"]]
    if kind == "masked":
        return xp.where(x != source["ignore"], x, xp.asarray(-1, x.dtype))
    if kind in ("present_values", "present_rows"):
        if source.get("column") is not None:
            x = x[:, source["column"]]
        if kind == "present_values":
            return x[x != source["ignore"]]
        return xp.nonzero(x != source["ignore"])[0]
    if kind == "batch":
        return x.shape[0]
    if kind == "first":
        return int(x.reshape(-1)[0])
    raise ValueError(f"unknown source kind {kind!r}")


def _upstream(view: GraphView, tensor: str):
    """(placeholders, op types) that ``tensor`` depends on (data edges)."""
    stack, seen, found, types = [split_input(tensor)[0]], set(), [], set()
    while stack:
        name = stack.pop()
        if name in seen or name not in view.nodes:
            continue
        seen.add(name)
        node = view.nodes[name]
        types.add(node.op)
        if node.op == "Placeholder":
            found.append(name)
        stack.extend(split_input(i)[0] for i in node.input if not i.startswith("^"))
    return sorted(set(found)), types


def _candidates(part: str, sparse: bool, x: np.ndarray, masked: bool = False) -> List[dict]:
    ignore = [-1, 0] if x.dtype.kind in "iu" else []
    if sparse:
        columns = [None] + (list(range(x.shape[1])) if x.ndim == 2 else [])
        kind = {"ids": "present_values", "weights": "present_values", "segment_ids": "present_rows"}.get(part)
        if kind is None:
            return [{"kind": "batch"}]
        return [{"kind": kind, "ignore": k, "column": c} for c in columns for k in ignore]
    if part == "num_rows":
        return [{"kind": "first"}, {"kind": "batch"}]
    found = [{"kind": "values"}]
    if x.ndim == 2:
        found += [{"kind": "column", "column": c} for c in range(x.shape[1])]
    if part == "ids" and x.dtype.kind in "iu" and x.ndim >= 2:
        # With a select upstream the masked form comes first: test data without padding
        # would also match "values", and then padding would be served as ids.
        mask = [{"kind": "masked", "ignore": 0}]
        found = mask + found if masked else found + mask
    return found


def _equal(got, want) -> bool:
    got, want = np.asarray(got), np.asarray(want)
    if want.ndim == 1 and want.size == 2 and got.ndim == 0:   # a dense_shape vector: its row count
        want = want[:1].reshape(())
    if got.size != want.size:
        return False
    return bool(np.array_equal(got.reshape(-1).astype(np.float64), want.reshape(-1).astype(np.float64)))


def discover(graph_def, ops: Sequence[dict], input_tensors: Dict[str, str], batches: Sequence[dict]):
    """Sources of every TiembLookup input of ``graph_def``.

    Args:
        ops: [{"name": op node name}] as the rewrite report lists them.
        input_tensors: signature argument name -> placeholder tensor name.
        batches: test feed dicts (argument name -> array) TensorFlow runs the
            graph on to verify each source.

    Returns {op name: [{part: source or None for part in PARTS}, one per slot]},
    a source being ``{"input": argument name, "kind": ..., ...}``.
    Raises ValueError naming the slot and the op input it cannot wire.
    """
    import tensorflow as tf

    view = GraphView(graph_def)
    placeholder_arg = {split_input(t)[0]: name for name, t in input_tensors.items()}
    wanted = []                    # (op, slot, part, tensor name)
    for op in ops:
        node = view.nodes[op["name"]]
        n = node.attr["N"].i
        for s in range(n):
            for p, part in enumerate(PARTS):
                t = node.input[1 + p * n + s]
                src = view.nodes.get(split_input(t)[0])
                if src is not None and src.op == "Const":   # tiemb/no_weights, no_rows, no_segments
                    continue
                wanted.append((op["name"], s, part, t))
    values = _run(tf, graph_def, input_tensors, [w[3] for w in wanted], batches)
    out = {op["name"]: [dict.fromkeys(PARTS) for _ in range(view.nodes[op["name"]].attr["N"].i)] for op in ops}
    for k, (op, s, part, tensor) in enumerate(wanted):
        sources, types = _upstream(view, tensor)
        args = [placeholder_arg[p] for p in sources if p in placeholder_arg]
        where = f"{op} slot {s} ({part}, tensor {tensor})"
        if len(args) != 1:
            raise ValueError(f"{where}: computed from {len(args)} model inputs {args}; a bundle serves slots "
                             "computed from exactly one input")
        arg = args[0]
        sparse = "Where" in types
        # The op reads column 0 of a 2-D segment-ids tensor in place (sp_ids.indices).
        target = [v[k][:, 0] if part == "segment_ids" and v[k].ndim == 2 else v[k] for v in values]
        chosen = None
        masked = bool(types & {"Select", "SelectV2"}) and "NotEqual" in types
        cands = _candidates(part, sparse, batches[0][arg], masked)
        ids_src = out[op][s]["ids"]
        if part != "ids" and ids_src and ids_src["input"] == arg and "column" in ids_src:
            # Row indices of one column can equal another column's: the ids' column and ignore value come first.
            same = [c for c in cands if c.get("column") == ids_src["column"] and c.get("ignore") == ids_src["ignore"]]
            cands = same + [c for c in cands if c not in same]
        for cand in cands:
            if all(_equal(compute(b[arg], cand), t) for b, t in zip(batches, target)):
                chosen = dict(cand, input=arg)
                break
        if chosen is None:
            kinds = sorted({c["kind"] for c in _candidates(part, sparse, batches[0][arg])})
            raise ValueError(f"{where}: not one of the sources a bundle can compute from input {arg!r} "
                             f"(tried {', '.join(kinds)}; op types upstream: {', '.join(sorted(types))})")
        out[op][s][part] = chosen
    return out


def _run(tf, graph_def, input_tensors, fetches: List[str], batches):
    if not fetches:
        return [[] for _ in batches]
    names = sorted(input_tensors)

    def imported(*args):
        return tf.compat.v1.import_graph_def(graph_def, input_map={input_tensors[n]: a for n, a in zip(names, args)},
                                             return_elements=[f if ":" in f else f + ":0" for f in fetches],
                                             name="")

    specs = [tf.TensorSpec([None] * batches[0][n].ndim, tf.as_dtype(batches[0][n].dtype)) for n in names]
    fn = tf.compat.v1.wrap_function(imported, specs)
    results = []
    for b in batches:
        results.append([t.numpy() for t in fn(*[tf.constant(b[n]) for n in names])])
    return results


def batch_input(wiring: Dict[str, List[dict]], dense_inputs: Sequence[str]) -> Optional[dict]:
    """Where a request's batch size comes from: the first input padded to a
    bucket (dense inputs, gather/column/padded-matrix sources) as its
    ``shape[0]``; else a ``first`` source (a dense_shape input's value)."""
    for name in dense_inputs:
        return {"input": name, "kind": "batch"}
    for slots in wiring.values():
        for slot in slots:
            for part in PARTS:
                src = slot[part]
                if src and src["kind"] in ("present_values", "present_rows", "batch") or \
                        (src and part == "ids" and slot.get("mode") == "gather"):
                    return {"input": src["input"], "kind": "batch"}
    for slots in wiring.values():
        for slot in slots:
            src = slot["num_rows"]
            if src and src["kind"] == "first":
                return dict(src)
    return None
