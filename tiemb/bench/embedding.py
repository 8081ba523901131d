"""The W&D-like embedding layer: TensorFlow's per-slot lookups vs one tiemb call.

26 slots of Criteo-like categorical features, each a table of `vocab` rows of
`dim` floats, `nnz` ids per sample drawn from Zipf(alpha), mean combiner.
TensorFlow runs `tf.nn.embedding_lookup_sparse` per slot inside one
`tf.function`; tiemb runs one `LookupGroup.lookup` on the same ids.
"""

from dataclasses import dataclass

import numpy as np

import tiemb
from .data import fixed_nnz_slot
from .timing import machine_name, time_side_by_side


@dataclass(frozen=True)
class EmbeddingCase:
    batch: int = 512
    slots: int = 26
    vocab: int = 100_000
    dim: int = 16
    nnz: int = 1
    alpha: float = 1.1
    combiner: str = "mean"


class EmbeddingLayerPair:
    """The same embedding layer built once in TensorFlow and once in tiemb."""

    def __init__(self, case: EmbeddingCase, seed: int = 0, num_threads: int = 0):
        import tensorflow as tf

        rng = np.random.default_rng(seed)
        self.case = case
        self.tables = [rng.standard_normal((case.vocab, case.dim)).astype(np.float32)
                       for _ in range(case.slots)]
        self.inputs = [fixed_nnz_slot(rng, case.vocab, case.batch, case.nnz, case.alpha)
                       for _ in range(case.slots)]

        # TensorFlow: tables as variables (what a trained model holds), one
        # tf.function over all slots, SparseTensor inputs prepared up front.
        tf_tables = [tf.Variable(t) for t in self.tables]
        self.sparse = [
            tf.SparseTensor(np.stack([seg, np.arange(len(ids)) % case.nnz], 1), ids, [case.batch, case.nnz])
            for ids, seg in self.inputs
        ]

        @tf.function
        def tf_layer(sparse_inputs):
            return [tf.nn.embedding_lookup_sparse(t, sp, None, combiner=case.combiner)
                    for t, sp in zip(tf_tables, sparse_inputs)]

        self._tf_layer = tf_layer

        engine = tiemb.EmbeddingEngine(case.batch, case.slots, case.nnz, num_threads)
        slots = [tiemb.Slot(engine.add_table(t), case.combiner) for t in self.tables]
        self.group = engine.group(slots)
        self.engine = engine
        self._ids = [ids for ids, _ in self.inputs]
        self._segs = [seg for _, seg in self.inputs]

    def run_tf(self):
        return self._tf_layer(self.sparse)

    def run_tiemb(self):
        return self.group.lookup(self._ids, segment_ids=self._segs)

    def max_abs_difference(self) -> float:
        ref = [t.numpy() for t in self.run_tf()]
        got = self.run_tiemb()
        return max(float(np.max(np.abs(r - g))) for r, g in zip(ref, got))


def run(cases, *, rounds: int = 30, per_round: int = 10, seed: int = 0):
    """Times every case side by side; returns a list of result dicts."""
    results = []
    for case in cases:
        pair = EmbeddingLayerPair(case, seed=seed)
        diff = pair.max_abs_difference()
        t = time_side_by_side({"tf": pair.run_tf, "tiemb": pair.run_tiemb}, rounds=rounds, per_round=per_round)
        results.append({
            "case": case.__dict__,
            "tf_ms": {k: v * 1e3 for k, v in t["tf"].items()},
            "tiemb_ms": {k: v * 1e3 for k, v in t["tiemb"].items()},
            "speedup": t["tf"]["median"] / t["tiemb"]["median"],
            "max_abs_diff": diff,
            "threads": pair.engine.num_threads,
        })
    return results


def format_table(results) -> str:
    lines = [f"machine: {machine_name()}",
             "| case | TF ms (median [min, max]) | tiemb ms (median [min, max]) | speedup | max |diff| |",
             "| --- | --- | --- | --- | --- |"]
    for r in results:
        c = r["case"]
        name = f"batch {c['batch']}, {c['slots']} slots, vocab {c['vocab']}, dim {c['dim']}, nnz {c['nnz']}"
        tf_, te = r["tf_ms"], r["tiemb_ms"]
        lines.append(f"| {name} | {tf_['median']:.3f} [{tf_['min']:.3f}, {tf_['max']:.3f}] | "
                     f"{te['median']:.3f} [{te['min']:.3f}, {te['max']:.3f}] | {r['speedup']:.1f}x | "
                     f"{r['max_abs_diff']:.1e} |")
    return "\n".join(lines)
