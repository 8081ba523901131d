"""Whole-model benchmark: original SavedModel vs the tiemb-optimized one, side
by side in one process on identical inputs.

Per model, batch and level it reports:

* embedding part: both graphs from the inputs to where the model first
  reads its lookups (a concatenation / stack of lookups only, which the op
  now writes, under the same node name in both; otherwise the lookup outputs
  and the op's outputs, so that no dense layer is timed), ended in one
  scalar that needs them all (the sum of their first elements), as TF1 session runs:
  one small fetch, so copying outputs back to Python does not dominate;
* the op's own time: the TiembLookup nodes' spans in TensorFlow's per-op
  trace of that graph, beside the engine's standalone time on the same
  inputs (the op's inputs evaluated once and fed to a LookupGroup built
  from the same tables, timed around the engine call alone);
* whole model: the original signature vs the optimized signature (loaded
  from disk, as a server would);
* floor: the optimized model's dense part alone (the fused op's outputs fed
  as precomputed tensors), run by the same dense backend: what the whole
  optimized model could take if its lookups were free.

Runs alternate between the graphs being compared (baseline, optimized,
baseline, ...) after a warm-up; medians of ``runs`` calls with min and max.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Sequence

import numpy as np

from . import models
from ..runner import graph_function
from ..serving.dense import dense_part
from ..timing import alternate as _alternate, machine_name, ms_stats

# Reference shapes (issue 4's and the seed's): W&D 26 x dim 16 with a 5 x 1024
# tower; DeepFM dim 8, DNN 256-128-64; DLRM 26 x dim 64.
DEFAULT_KW = {"wd": {"dim": 16, "tower": (1024,) * 5}, "deepfm": {"dim": 8}, "dlrm": {"dim": 64}}
SMALL_KW = {"wd": {"dim": 16, "tower": (64, 64)}, "deepfm": {"dim": 8, "dnn": (32, 16)},
            "dlrm": {"dim": 16, "bottom": (32,), "top": (32, 16)}}


@dataclass
class Timing:
    median_ms: float
    min_ms: float
    max_ms: float

    @staticmethod
    def of(seconds: Sequence[float]) -> "Timing":
        st = ms_stats(seconds)
        return Timing(st["median_ms"], st["min_ms"], st["max_ms"])


@dataclass
class Row:
    model: str
    batch: int
    level: int
    lookups_found: int
    lookups_fused: int
    dense_backend: str
    embedding_original: Timing
    embedding_fused: Timing
    whole_original: Timing
    whole_optimized: Timing
    floor: Timing
    max_abs_diff: float
    max_rel_diff: float
    dropped_backends: List[dict] = field(default_factory=list)
    profile: Dict[str, object] = field(default_factory=dict)   # embedding part, per op type (see op_profile)
    op_traced_ms: float = 0.0        # the TiembLookup nodes' traced time per run (median over runs)
    engine_ms: float = 0.0           # the engine alone on the same inputs (median)
    fused_outputs: int = 0           # the ops' outputs after output fusion (lookups_fused before it)

    simulated_hit_rate: float = float("nan")  # GPU cache hit rate tiemb advise expects on this traffic (issue 15)

    @property
    def op_over_engine(self) -> float:
        return self.op_traced_ms / self.engine_ms if self.engine_ms else float("nan")

    @property
    def embedding_speedup(self) -> float:
        return self.embedding_original.median_ms / self.embedding_fused.median_ms

    @property
    def speedup(self) -> float:
        return self.whole_original.median_ms / self.whole_optimized.median_ms

    @property
    def over_floor(self) -> float:
        return self.whole_optimized.median_ms / self.floor.median_ms

    @property
    def qps_original(self) -> float:
        return self.batch * 1e3 / self.whole_original.median_ms

    @property
    def qps_optimized(self) -> float:
        return self.batch * 1e3 / self.whole_optimized.median_ms

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(embedding_speedup=self.embedding_speedup, speedup=self.speedup, over_floor=self.over_floor,
                 op_over_engine=self.op_over_engine, qps_original=self.qps_original, qps_optimized=self.qps_optimized)
        return d


def alternate(fns: Sequence[Callable[[], object]], runs: int, warmup: int = 5) -> List[Timing]:
    """Times the callables interleaved (a, b, a, b, ...): same machine state for each."""
    return [Timing.of(s) for s in _alternate(fns, runs, warmup=warmup)]


def _import(tf, graph_def, fetches: Sequence[str], store: str = None, probe: bool = True):
    """(graph, fetch tensors): ``graph_def`` imported, and either ``fetches``
    or (``probe``) one float32 scalar that needs all of them: the sum of their
    first elements, the same kind of ops on both sides of a comparison."""
    graph = tf.Graph()
    with graph.as_default():
        input_map = {"tiemb/store:0": tf.constant(store)} if store else None
        tf.compat.v1.import_graph_def(graph_def, input_map=input_map, name="")
        tensors = [graph.get_tensor_by_name(t) for t in fetches]
        if probe:
            # One element of each: TensorFlow still computes every tensor whole,
            # and the probe itself costs next to nothing (a sum or a concat of
            # the outputs would read or copy megabytes on both sides).
            with tf.name_scope("bench_probe"):
                tensors = [tf.add_n([tf.cast(tf.reshape(t, [-1])[0], tf.float32) for t in tensors])]
    return graph, tensors


def session_runner(tf, graph_def, feeds: Dict[str, np.ndarray], fetches: Sequence[str], store: str = None,
                   probe: bool = True):
    """A no-argument callable running ``graph_def`` in a TF1 session from
    fixed ``feeds`` to ``fetches`` (``probe``: to one scalar reading them all,
    see ``_import``; a session run has less overhead around the graph than
    an eager function call)."""
    graph, tensors = _import(tf, graph_def, fetches, store, probe)
    session = tf.compat.v1.Session(graph=graph)
    names = list(feeds)
    run = session.make_callable(tensors, [graph.get_tensor_by_name(n) for n in names])
    values = [feeds[n] for n in names]
    return lambda: run(*values)


def op_profile(tf, graph_def, feeds: Dict[str, np.ndarray], fetches: Sequence[str], store: str = None,
               runs: int = 30, top: int = 8, probe: bool = True):
    """Per-op-type time inside one session run (TensorFlow's step stats, full
    trace) of the graph to ``fetches`` (``probe``: to one scalar reading them
    all): (median run span in ms, [(op type, mean ms per run, nodes)] largest
    first, {op type: median ms per run}). Tracing adds a little to every op,
    so spans are for reading the split, not for the headline numbers."""
    graph, tensors = _import(tf, graph_def, fetches, store, probe)
    session = tf.compat.v1.Session(graph=graph)
    feed = {graph.get_tensor_by_name(k): v for k, v in feeds.items()}
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    op_type = {n.name: n.op for n in graph_def.node}
    spans, per_type, nodes, per_run = [], {}, {}, {}
    for i in range(runs + 5):
        meta = tf.compat.v1.RunMetadata()
        session.run(tensors, feed_dict=feed, options=options, run_metadata=meta)
        if i < 5:
            continue
        starts, ends, this_run = [], [], {}
        for dev in meta.step_stats.dev_stats:
            for ns in dev.node_stats:
                if ns.node_name not in op_type:
                    continue
                starts.append(ns.all_start_micros)
                ends.append(ns.all_start_micros + ns.all_end_rel_micros)
                kind = op_type[ns.node_name]
                per_type[kind] = per_type.get(kind, 0) + ns.all_end_rel_micros
                this_run[kind] = this_run.get(kind, 0) + ns.all_end_rel_micros
                nodes.setdefault(kind, set()).add(ns.node_name)
        for kind, us in this_run.items():
            per_run.setdefault(kind, []).append(us / 1e3)
        if starts:
            spans.append((max(ends) - min(starts)) / 1e3)
    ranked = sorted(((t / runs / 1e3, k) for k, t in per_type.items()), reverse=True)[:top]
    medians = {k: statistics.median(v) for k, v in per_run.items()}
    return statistics.median(spans) if spans else 0.0, [(k, ms, len(nodes[k])) for ms, k in ranked], medians


def engine_time(tf, graph_def, feeds: Dict[str, np.ndarray], store: str, view, table_of: Dict[str, str],
                half_tables: bool, runs: int = 200) -> float:
    """Median ms of the engine alone on the inputs the graph's TiembLookup ops
    get from ``feeds``: their input tensors evaluated once, then one
    LookupGroup per op over the same tables (``view``: the frozen original's
    GraphView; ``table_of``: store file -> table node) timed around the engine
    call (``LookupGroup.time_lookup``), the ops one after another."""
    total = None
    for group, args in engine_groups(tf, graph_def, feeds, store, view, table_of, half_tables):
        seconds = np.array(group.time_lookup(*args, repeats=runs))
        total = seconds if total is None else total + seconds
    return float(np.median(total)) * 1e3 if total is not None else 0.0


def op_input_values(tf, graph_def, feeds: Dict[str, np.ndarray], store: str) -> list:
    """Per TiembLookup node of ``graph_def``: (node, the values of its inputs
    after the store) on ``feeds``, evaluated once."""
    ops = [n for n in graph_def.node if n.op == "TiembLookup"]
    graph, _ = _import(tf, graph_def, [], store, probe=False)
    session = tf.compat.v1.Session(graph=graph)
    feed = {graph.get_tensor_by_name(k): v for k, v in feeds.items()}
    return [(op, session.run([graph.get_tensor_by_name(i if ":" in i else i + ":0")
                              for i in op.input[1:] if not i.startswith("^")], feed)) for op in ops]


def engine_groups(tf, graph_def, feeds: Dict[str, np.ndarray], store: str, view, table_of: Dict[str, str],
                  half_tables: bool, num_threads: int = 0) -> list:
    """Per TiembLookup node: (LookupGroup over the same tables, the
    positional arguments of its ``lookup``/``time_lookup`` for the node's
    inputs on ``feeds``); arguments as ``engine_time``, ``num_threads`` the
    engine's (0: one per core). Ids read in place by the op (columns of an
    id matrix) are copied contiguous here."""
    import tiemb

    out = []
    for op, values in op_input_values(tf, graph_def, feeds, store):
        n = op.attr["N"].i
        ids, segs, weights, rows = (values[k * n:(k + 1) * n] for k in range(4))
        files = [t.decode() for t in op.attr["tables"].list.s]
        tables = [view.table_value(view.nodes[table_of[f]]) for f in files]
        types = list(op.attr["out_types"].list.type)
        outs = list(op.attr["slot_outputs"].list.i) or list(range(n))
        modes = [m.decode() for m in op.attr["modes"].list.s]
        columns = list(op.attr["id_columns"].list.i) or [-1] * n
        widths = list(op.attr["id_widths"].list.i) or [-1] * n
        for s, (w, c) in enumerate(zip(widths, columns)):
            if w >= 0:      # a padded id matrix (its columns from c): the engine's 2-D safe form
                m = ids[s].reshape(-1, ids[s].shape[-1])
                first = max(c, 0)
                ids[s] = np.ascontiguousarray(m[:, first:first + (w or m.shape[1] - first)])
        ids = [np.ascontiguousarray(i[:, c]) if c >= 0 and w < 0 else i for i, c, w in zip(ids, columns, widths)]
        segs = [None if m == "gather" or w >= 0 else np.ascontiguousarray(g[:, 0] if g.ndim == 2 else g)
                for g, m, w in zip(segs, modes, widths)]
        weights = [w if op.attr["weighted"].list.b[s] else None for s, w in enumerate(weights)]
        rows = [(ids[s].shape[0] if w >= 0 else int(np.reshape(r, -1)[0])) if m == "safe" else None
                for s, (r, m, w) in enumerate(zip(rows, modes, widths))]
        engine = tiemb.EmbeddingEngine(max([512] + [i.size for i in ids] + [r or 0 for r in rows]), n, 64,
                                       num_threads)
        slots = []
        for s in range(n):
            t = tables[s].astype(np.float16) if half_tables else tables[s]
            default = op.attr["default_ids"].list.i[s]
            slots.append(tiemb.Slot(engine.add_table(t), op.attr["combiners"].list.s[s].decode(), modes[s],
                                    default if default >= 0 else None,
                                    "float16" if types[outs[s]] == 19 else "float32"))
        group = engine.group(slots)
        out.append((group, (ids, segs if any(m != "gather" for m in modes) else None, None, weights, rows)))
    return out


@dataclass
class _Prepared:
    """One reference model built, loaded once and frozen, with its inputs."""

    name: str
    src: str
    spec: object
    sig: object                  # tiemb.rewrite.saved_model.FrozenSignature
    feeds_by_batch: Dict[int, Dict[str, np.ndarray]]
    real: Dict[str, np.ndarray]
    inputs: List[str]            # the frozen graph's input tensors, in sig.arg_names order
    specs: list
    missing: float


def _prepare(tf, name, batches, scale, small, seed, work, progress) -> _Prepared:
    from ..rewrite.saved_model import freeze_signature

    src = os.path.join(work, name)
    kw = dict((SMALL_KW if small else DEFAULT_KW)[name], seed=seed)
    progress(f"building {name} ({scale} vocabularies)")
    spec = models.BUILDERS[name](src, models.vocab_for(scale), **kw)
    rng = np.random.default_rng(seed)
    missing = 0.05 if name == "deepfm" else 0.0
    feeds_by_batch = {b: models.random_batch(spec, b, rng, missing=missing) for b in batches}
    sig = freeze_signature(src)
    largest = feeds_by_batch[max(batches)]
    specs = [tf.TensorSpec([None] + list(largest[n].shape[1:]), tf.as_dtype(largest[n].dtype)) for n in sig.arg_names]
    return _Prepared(name, src, spec, sig, feeds_by_batch, models.real_batch(spec),
                     [sig.input_tensors[n] for n in sig.arg_names], specs, missing)


def _embedding_ends(new_gd, ops):
    """(ends in the original, ends in the fused graph, every op output, outputs per op).

    The embedding part ends where the model first reads the lookups: a
    concatenation / stack / sum of lookups only, which the op now writes
    (same node name in both graphs); else the lookups (original) and the
    op's outputs (fused), so that no dense layer is timed."""
    kinds = {n.name: n.op for n in new_gd.node}
    ends_original, ends_fused = [], []
    for op in ops:
        inside = {sl for m in op.get("merged", []) for sl in m["slots"]}
        alone = [sl for sl in op["slots"] if sl not in inside]
        ends_original += [f"{sl}:0" for sl in alone]
        ends_fused += [f"{op['name']}:{k}" for k in range(len(alone))]
        for m in op.get("merged", []):
            if kinds.get(m["into"]) in ("Identity", "Reshape"):      # the whole pattern is the op's output
                ends_original.append(f"{m['into']}:0")
                ends_fused.append(f"{m['into']}:0")
            else:
                ends_original += [f"{sl}:0" for sl in m["slots"]]
                ends_fused.append(f"{op['name']}:{m['output']}")
    outputs_of = [op.get("num_outputs", len(op["slots"])) for op in ops]
    op_outputs = [f"{op['name']}:{k}" for op, m in zip(ops, outputs_of) for k in range(m)]
    return ends_original, ends_fused, op_outputs, outputs_of


def bench_model(name: str, *, batches: Sequence[int], levels: Sequence[int], scale: str = "small",
                runs: int = 50, small: bool = False, seed: int = 0, work_dir: str = None, progress=print,
                profile_ops: bool = False) -> List[Row]:
    """Builds reference model ``name`` once, optimizes it per level (engine
    sized for the largest batch; dense backend chosen on that batch and the
    real rows) and measures it at every batch size (see module doc).

    Args:
        name: "wd", "deepfm" or "dlrm".
        batches: batch sizes to measure.
        levels: optimization levels (0, 1).
        scale: vocabulary sizes ("tiny", "small", "full").
        runs: timed calls per measurement.
        small: small dense towers (quick checks).
        seed: seed of the model's weights and the batches.
        work_dir: where the models are written (None: a new temporary directory).
        progress: called with one line per stage.
        profile_ops: also the per-op-type profile of both embedding parts."""
    import tensorflow as tf

    from .. import tf_ops
    from ..rewrite import rewrite_saved_model

    tf_ops.load()
    work = work_dir or tempfile.mkdtemp(prefix="tiemb-bench-")
    p = _prepare(tf, name, batches, scale, small, seed, work, progress)
    loaded = []            # keep the objects: their variables back the functions
    rows = []
    for level in levels:
        progress(f"optimizing {name} at level {level}")
        dst = os.path.join(work, f"{name}_l{level}")
        max_batch = max(max(batches), len(p.real["cat"]))
        report = rewrite_saved_model(p.src, dst, max_batch_size=max_batch, max_nnz=models.GENRES_LEN, level=level,
                                     test_batches=[p.feeds_by_batch[max(batches)], p.real], overwrite=True,
                                     frozen=p.sig)
        loaded.append(tf.saved_model.load(dst))
        rows += _bench_level(tf, p, report, loaded[-1].signatures["serving_default"], dst, level, max_batch, batches,
                             runs, seed, progress, profile_ops)
    return rows


def _bench_level(tf, p: _Prepared, report, optimized, dst, level, max_batch, batches, runs, seed, progress,
                 profile_ops) -> List[Row]:
    """The rows of one optimized model (``optimized``: its loaded signature), one per batch size."""
    from .. import backends
    from ..rewrite.graph import GraphView
    from ..rewrite.sparse_lookup import rewrite_sparse_lookups

    graph_def, original = p.sig.graph_def, p.sig.fn
    # The same rewrite in memory, for the parts (lookup outputs, dense part),
    # reading the saved model's own store: its assets.
    store = os.path.join(dst, "assets")
    new_gd, again = rewrite_sparse_lookups(graph_def, None, max_batch_size=max_batch, max_nnz=models.GENRES_LEN,
                                           half_tables=level >= 1, resources=p.sig.resources)
    ends_original, ends_fused, op_outputs, outputs_of = _embedding_ends(new_gd, again.ops)
    view = GraphView(graph_def, p.sig.resources)
    table_of = {f: lk["table"] for lk in again.lookups
                for f in [re.sub(r"[^A-Za-z0-9_.-]", "_", lk["table"]) + ".tiemb"]}
    dense_gd, _ = backends.apply(report.dense["dense_backend"], dense_part(new_gd, again.ops), level)
    fetches = [p.sig.outputs[k] for k in sorted(p.sig.outputs)]
    emb_fused = graph_function(new_gd, p.inputs, op_outputs, store)
    placeholders = [f"{op['name']}/out_{k}:0" for op, m in zip(again.ops, outputs_of) for k in range(m)]
    dense = graph_function(dense_gd, p.inputs + placeholders, fetches)
    rows = []
    for batch in batches:
        feeds = p.feeds_by_batch[batch]
        tensors = {k: tf.constant(v) for k, v in feeds.items()}
        args = [tensors[n] for n in p.sig.arg_names]
        dense_args = args + list(emb_fused(*args))
        progress(f"timing {p.name} batch {batch} level {level}: {runs} runs each, alternating")
        # The embedding part as session runs: both end in one scalar reading every lookup.
        np_feeds = {t: feeds[n] for t, n in zip(p.inputs, p.sig.arg_names)}
        e0, e1 = alternate([session_runner(tf, graph_def, np_feeds, ends_original),
                            session_runner(tf, new_gd, np_feeds, ends_fused, store)], runs)
        fused_profile = op_profile(tf, new_gd, np_feeds, ends_fused, store)
        engine_ms = engine_time(tf, new_gd, np_feeds, store, view, table_of, level >= 1)
        profile = {"original": op_profile(tf, graph_def, np_feeds, ends_original),
                   "fused": fused_profile} if profile_ops else {}
        w0, w1, fl = alternate([lambda: original(**tensors), lambda: optimized(**tensors),
                                lambda: dense(*dense_args)], runs)
        abs_d = rel_d = 0.0
        for check in (feeds, p.real):
            t = {k: tf.constant(v) for k, v in check.items()}
            a, r = backends.relative_difference({k: v.numpy() for k, v in original(**t).items()},
                                                {k: v.numpy() for k, v in optimized(**t).items()})
            abs_d, rel_d = max(abs_d, a), max(rel_d, r)
        rows.append(Row(p.name, batch, level, report.found, report.replaced, report.dense["dense_backend"],
                        e0, e1, w0, w1, fl, abs_d, rel_d, report.dense.get("dropped_backends", []), profile,
                        fused_profile[2].get("TiembLookup", 0.0), engine_ms, sum(outputs_of)))
        rows[-1].simulated_hit_rate = simulated_hit_rate(tf, graph_def, p.inputs, p.sig.arg_names, p.specs,
                                                         again.lookups, p.spec, batch, seed, p.missing)
    return rows


# On the CPU every table is resident in host memory: there is no cache to miss.
CACHE_HIT_CPU = "n/a (CPU: all resident)"
SIM_BATCHES = 20


def simulated_hit_rate(tf, graph_def, inputs, arg_names, specs, lookups, spec, batch: int, seed: int,
                       missing: float = 0.0, cache_percentage: float = None) -> float:
    """The GPU cache hit rate ``tiemb advise`` expects at the config's
    cache_percentage on this bench's traffic (SIM_BATCHES fresh batches of
    ``batch``, hits counted over the second half; all tables together: hits /
    unique ids), simulated on the CPU."""
    from ..advise import TableInfo, simulate
    from ..config import PARAMETERS

    if cache_percentage is None:
        cache_percentage = PARAMETERS["tiemb/cache_percentage"][1]
    names = list(dict.fromkeys(lk["ids"] if ":" in lk["ids"] else f"{lk['ids']}:0" for lk in lookups))
    if not names:
        return float("nan")
    fn = graph_function(graph_def, inputs, names)
    rng = np.random.default_rng(seed + 7)
    per: Dict[str, list] = {}
    for _ in range(SIM_BATCHES):
        feeds = models.random_batch(spec, batch, rng, missing=missing)
        values = dict(zip(names, fn(*[tf.constant(feeds[n]) for n in arg_names])))
        got: Dict[str, list] = {}
        for lk in lookups:
            v = values[lk["ids"] if ":" in lk["ids"] else f"{lk['ids']}:0"].numpy()
            if lk.get("id_column") is not None and v.ndim == 2:
                v = v[:, lk["id_column"]]
            got.setdefault(lk["table"], []).append(v.astype(np.int64).ravel())
        for t, parts in got.items():
            per.setdefault(t, []).append(np.concatenate(parts))
    rows = {lk["table"]: (int(lk["rows"]), int(lk["dim"])) for lk in lookups}
    hits = unique = 0
    for t, batches_of in per.items():
        c = simulate(TableInfo(t, *rows[t]), batches_of, cache_percentage, warmup=SIM_BATCHES // 2)
        hits, unique = hits + c["hits"], unique + c["unique_ids"]
    return hits / unique if unique else float("nan")


def _hit_cell(r) -> str:
    sim = r.simulated_hit_rate
    if sim != sim:  # nan: no lookups to simulate
        return CACHE_HIT_CPU
    return f"{sim:.1%} simulated GPU (CPU: all resident)"


def format_table(rows: Sequence[Row]) -> str:
    """The seed-style table plus our columns."""
    head = ("| model | batch | level | TF ms | tiemb ms | speedup | QPS TF | QPS tiemb | embedding TF ms | "
            "embedding fused ms | embedding speedup | op traced ms | engine ms | op / engine | floor ms | "
            "tiemb / floor | max rel diff | fused | outputs | backend | cache hit rate |")
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.batch} | {r.level} | {r.whole_original.median_ms:.2f} | "
            f"{r.whole_optimized.median_ms:.2f} | {r.speedup:.2f}x | {r.qps_original:,.0f} | {r.qps_optimized:,.0f} | "
            f"{r.embedding_original.median_ms:.3f} | {r.embedding_fused.median_ms:.3f} | {r.embedding_speedup:.1f}x | "
            f"{r.op_traced_ms:.3f} | {r.engine_ms:.3f} | {r.op_over_engine:.2f} | "
            f"{r.floor.median_ms:.2f} | {r.over_floor:.2f} | {r.max_rel_diff:.1e} | "
            f"{r.lookups_fused}/{r.lookups_found} | {r.fused_outputs} | {r.dense_backend} | {_hit_cell(r)} |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: str) -> None:
    """Latency (original and optimized) and speedup against batch size, per model and level."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from None
    names = sorted({r.model for r in rows})
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for col, name in enumerate(names):
        for level in sorted({r.level for r in rows}):
            sel = sorted((r for r in rows if r.model == name and r.level == level), key=lambda r: r.batch)
            x = [r.batch for r in sel]
            if level == min(r.level for r in rows):
                axes[0][col].plot(x, [r.whole_original.median_ms for r in sel], "o--", color="gray",
                                  label="TensorFlow")
            axes[0][col].plot(x, [r.whole_optimized.median_ms for r in sel], "o-", label=f"tiemb level {level}")
            axes[1][col].plot(x, [r.speedup for r in sel], "o-", label=f"level {level}")
        axes[0][col].set(title=name, xscale="log", yscale="log", xlabel="batch", ylabel="latency ms (median)")
        axes[1][col].axhline(1.0, color="gray", lw=0.8)
        axes[1][col].set(xscale="log", xlabel="batch", ylabel="speedup vs TensorFlow")
        axes[0][col].legend()
        axes[1][col].legend()
    fig.suptitle(f"tiemb vs TensorFlow, {machine_name()}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
