"""Issue 13's breakdown: where the TiembLookup op's time goes beyond the
engine's, per reference model, on the op's real inputs.

Per model and level the rewritten graph's TiembLookup ops get their inputs
evaluated once (batch 512); then, taking turns round by round:

* ``op``: a session running Const inputs -> the op -> one scalar (the sum of
  each output's first element), so neither feeding nor fetching is timed;
* ``floor_alloc``: the same graph, the op's node labelled ``_kernel:
  tiemb_floor_alloc`` (it allocates outputs of the real shapes and writes
  nothing): TensorFlow's cost of an op of this signature plus the output
  allocation;
* ``floor_empty``: labelled ``tiemb_floor_empty`` (it hands back the first
  call's outputs): the cost of any op of this signature in a session, the
  physical floor the op's time sits on;
* ``engine 1/round``: the engine alone on the same inputs
  (``LookupGroup.time_lookup``, one call per round: the op's situation,
  caches and threads as the session runs leave them), ``engine b2b``: 200
  back-to-back calls (what ``tiemb bench`` reports as "engine ms") and
  ``engine 1 thread``: the same on an engine of one thread (the work
  itself, no parallel loop);

and each graph's TiembLookup time from TensorFlow's full trace (median per
run). The embedding part of the whole model (inputs fed, as ``tiemb bench``
times it) is measured too, TensorFlow's ops against the fused graph, beside
``feed floor``: a session that is fed the same inputs and sums one element of
each, the part of the embedding measure no lookup can remove.

    python benchmarks/op_overhead.py [--models wd,deepfm,dlrm] [--levels 0,1] [--rounds 30] [--intra N] [--json F]

``--intra 1`` gives the isolated op sessions one intra-op thread: the op then
runs inline on the calling thread (the columns "op" and "op traced" change;
the model sessions keep TensorFlow's default).
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile

import numpy as np
import tensorflow as tf

from tiemb import tf_ops
from tiemb.bench import model_bench as mb
from tiemb.bench import models
from tiemb.rewrite import rewrite_saved_model
from tiemb.rewrite.graph import GraphView
from tiemb.rewrite.sparse_lookup import rewrite_sparse_lookups
from tiemb.timing import alternate, machine_name

BATCH = 512
FLOORS = ("tiemb_floor_alloc", "tiemb_floor_empty")
INTRA = [0]  # the isolated sessions' intra_op_parallelism_threads (0: TensorFlow's default, one per core)


def isolated_graph(op_values, store: str, label: str = None):
    """GraphDef: Const inputs -> each TiembLookup node (labelled ``label``) ->
    nothing else; returns (graph_def, the ops' output tensor names)."""
    gd = tf.compat.v1.GraphDef()
    store_node = gd.node.add(name="tiemb_store", op="Const")
    store_node.attr["dtype"].type = tf.string.as_datatype_enum
    store_node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(store))
    fetches, consts = [], {}
    for op, values in op_values:
        node = gd.node.add()
        node.CopyFrom(op)
        node.ClearField("input")
        node.ClearField("device")
        node.input.append("tiemb_store")
        # One Const per distinct input tensor: slots that read the same id
        # matrix in the model read one buffer here too.
        for i, (src, v) in enumerate(zip([x for x in op.input[1:] if not x.startswith("^")], values)):
            if src not in consts:
                consts[src] = f"{op.name}/in_{i}"
                c = gd.node.add(name=consts[src], op="Const")
                c.attr["dtype"].type = tf.as_dtype(v.dtype).as_datatype_enum
                c.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(v))
            node.input.append(consts[src])
        if label:
            node.attr["_kernel"].s = label.encode()
        fetches += [f"{op.name}:{k}" for k in range(len(op.attr["out_types"].list.type))]
    return gd, fetches


def _session(gd, fetches):
    """(session, the probe scalar) for ``gd`` with Grappler and the session's
    graph optimizer off: their constant folding would evaluate the op over Const inputs once, at
    session creation, and time nothing."""
    graph, tensors = mb._import(tf, gd, fetches)
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=INTRA[0])
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.optimizer_options.opt_level = tf.compat.v1.OptimizerOptions.L0  # the session's own folding
    config.graph_options.optimizer_options.do_constant_folding = False
    return tf.compat.v1.Session(graph=graph, config=config), tensors


def isolated_runner(gd, fetches):
    session, tensors = _session(gd, fetches)
    run = session.make_callable(tensors)
    return lambda: run()


def traced_op_ms(gd, fetches, runs: int = 30) -> float:
    """Median per run of the TiembLookup nodes' traced time in ``gd``."""
    session, tensors = _session(gd, fetches)
    options = tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)
    names = {n.name for n in gd.node if n.op == "TiembLookup"}
    per_run = []
    for i in range(runs + 5):
        meta = tf.compat.v1.RunMetadata()
        session.run(tensors, options=options, run_metadata=meta)
        us = sum(ns.all_end_rel_micros for dev in meta.step_stats.dev_stats for ns in dev.node_stats
                 if ns.node_name in names)
        if i >= 5:
            per_run.append(us / 1e3)
    return statistics.median(per_run)


def feed_floor(inputs, feeds):
    """A session fed ``feeds`` that sums one element of each: what every
    embedding-part run pays (feeding, starting the executor, one fetch)."""
    graph = tf.Graph()
    with graph.as_default():
        phs = [tf.compat.v1.placeholder(tf.as_dtype(feeds[n].dtype), feeds[n].shape) for n in inputs]
        out = tf.add_n([tf.cast(tf.reshape(p, [-1])[0], tf.float32) for p in phs])
    run = tf.compat.v1.Session(graph=graph).make_callable(out, phs)
    values = [feeds[n] for n in inputs]
    return lambda: run(*values)


def prepare(name: str, work: str):
    p = mb._prepare(tf, name, [BATCH], "small", True, 0, work, lambda m: None)
    return p


def measure(p, level: int, work: str, rounds: int) -> dict:
    """One row: every measure of the module doc for model ``p`` at ``level``."""
    dst = os.path.join(work, f"{p.name}_l{level}")
    max_batch = max(BATCH, len(p.real["cat"]))
    rewrite_saved_model(p.src, dst, max_batch_size=max_batch, max_nnz=models.GENRES_LEN, level=level,
                        test_batches=[p.feeds_by_batch[BATCH], p.real], overwrite=True, frozen=p.sig)
    store = os.path.join(dst, "assets")
    new_gd, again = rewrite_sparse_lookups(p.sig.graph_def, None, max_batch_size=max_batch,
                                           max_nnz=models.GENRES_LEN, half_tables=level >= 1,
                                           resources=p.sig.resources)
    ends_original, ends_fused, _, _ = mb._embedding_ends(new_gd, again.ops)
    view = GraphView(p.sig.graph_def, p.sig.resources)
    table_of = {f: lk["table"] for lk in again.lookups
                for f in [mb.re.sub(r"[^A-Za-z0-9_.-]", "_", lk["table"]) + ".tiemb"]}
    feeds = {t: p.feeds_by_batch[BATCH][n] for t, n in zip(p.inputs, p.sig.arg_names)}
    op_values = mb.op_input_values(tf, new_gd, feeds, store)
    graphs = {"op": isolated_graph(op_values, store)}
    graphs.update({lb: isolated_graph(op_values, store, lb) for lb in FLOORS})
    runners = {k: isolated_runner(gd, fetches) for k, (gd, fetches) in graphs.items()}
    groups = mb.engine_groups(tf, new_gd, feeds, store, view, table_of, level >= 1)
    engine_one = []

    def engine_call():
        engine_one.append(sum(g.time_lookup(*a, repeats=1)[0] for g, a in groups))

    fns = dict(runners)
    fns["engine 1/round"] = engine_call
    fns["emb TF"] = mb.session_runner(tf, p.sig.graph_def, feeds, ends_original)
    fns["emb fused"] = mb.session_runner(tf, new_gd, feeds, ends_fused, store)
    fns["feed floor"] = feed_floor(p.inputs, feeds)
    samples = alternate(list(fns.values()), rounds, warmup=10, per_round=5)
    row = {k: statistics.median(s) * 1e3 for k, s in zip(fns, samples)}
    row["engine 1/round"] = statistics.median(engine_one[-rounds * 5:]) * 1e3
    row["engine b2b"] = statistics.median(
        sum(np.array(g.time_lookup(*a, repeats=200)) for g, a in groups)) * 1e3
    inline = mb.engine_groups(tf, new_gd, feeds, store, view, table_of, level >= 1, num_threads=1)
    row["engine 1 thread"] = statistics.median(
        sum(np.array(g.time_lookup(*a, repeats=200)) for g, a in inline)) * 1e3
    for k, (gd, fetches) in graphs.items():
        row[f"{k} traced"] = traced_op_ms(gd, fetches)
    row.update(model=p.name, level=level, slots=sum(op.attr["N"].i for op, _ in op_values),
               outputs=sum(len(op.attr["out_types"].list.type) for op, _ in op_values))
    return row


COLUMNS = ["op", "op traced", "tiemb_floor_alloc", "tiemb_floor_alloc traced", "tiemb_floor_empty",
           "tiemb_floor_empty traced", "engine 1/round", "engine b2b", "engine 1 thread", "emb TF", "emb fused", "feed floor"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="wd,deepfm,dlrm")
    ap.add_argument("--levels", default="0,1")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--intra", type=int, default=0,
                    help="intra_op_parallelism_threads of the isolated op sessions (1: the op runs inline)")
    ap.add_argument("--json")
    a = ap.parse_args()
    INTRA[0] = a.intra
    tf_ops.load()
    work = tempfile.mkdtemp(prefix="tiemb-opoverhead-")
    load = os.getloadavg()
    rows = []
    for name in a.models.split(","):
        p = prepare(name, work)
        for level in (int(x) for x in a.levels.split(",")):
            rows.append(measure(p, level, work, a.rounds))
            print(json.dumps(rows[-1]), flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {machine_name()}; load average at start {load[0]:.2f}, at end {os.getloadavg()[0]:.2f}; "
          f"commit {commit}; intra-op threads {a.intra or 'default'}; batch {BATCH}; {a.rounds} rounds x 5 calls, medians, ms")
    print("| model | level | slots | outputs | " + " | ".join(COLUMNS) + " |")
    print("| --- " * (4 + len(COLUMNS)) + "|")
    for r in rows:
        print(f"| {r['model']} | {r['level']} | {r['slots']} | {r['outputs']} | " +
              " | ".join(f"{r[c]:.3f}" for c in COLUMNS) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
