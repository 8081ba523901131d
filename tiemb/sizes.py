"""The engine sizes ``tiemb/max_batch_size``, ``tiemb/slot_num`` and
``tiemb/max_nnz``, in the meaning a serving engineer gives them:

* ``max_batch_size``: samples per call. A dense id input: its leading
  dimension; a sparse one: ``dense_shape[0]`` (or the number of segments for
  1-D segment ids); never its number of ids.
* ``slot_num``: features, i.e. distinct id inputs, the fused op serves: an
  ids tensor, or one column of an id matrix, counts once however many tables
  it feeds (see :mod:`tiemb.rewrite.features`).
* ``max_nnz``: ids per sample per feature. A dense id matrix: its width
  (a padded one read by the op: the columns it reads); a sparse input: the
  most ids that share one row index.

:func:`engine_sizes` measures what the model needs on the test data, with
the same definitions the engine checks at serving time, fills what the
config leaves open and refuses a given size smaller than what is needed,
naming the parameter, both values and the feature that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from .config import ConfigError

KEYS = ("tiemb/max_batch_size", "tiemb/slot_num", "tiemb/max_nnz")


@dataclass
class Need:
    """The largest value a size must have, and where it was seen."""

    value: int = 0
    where: str = ""

    def see(self, value: int, where: str) -> None:
        if value > self.value:
            self.value, self.where = int(value), where


def lookup_tensors(lookups: Sequence[dict]) -> List[str]:
    """The tensors whose values the sizes are measured on: per lookup its ids,
    segment ids and row count (the fused op's inputs)."""
    names = []
    for lk in lookups:
        for key in ("ids", "segment_ids", "num_rows"):
            t = lk.get(key)
            if t and t not in names:
                names.append(t)
    return names


def measure(lookups: Sequence[dict], values: Sequence[Dict[str, np.ndarray]],
            widths: Sequence[Dict[str, int]]) -> Dict[str, Need]:
    """What each size must be for these lookups on these test batches.

    ``values[b]``: tensor name -> value on test batch ``b`` (see
    :func:`lookup_tensors`); ``widths[b]``: feature name -> the width of the
    dense id matrix it is read from (a feature converted to sparse ids
    inside the model may have a sample with every column set)."""
    need = {"tiemb/max_batch_size": Need(), "tiemb/max_nnz": Need()}
    for b, (vals, width) in enumerate(zip(values, widths)):
        for lk in lookups:
            samples, nnz, sample = sample_counts(lk, vals)
            name = lk["feature"]
            need["tiemb/max_batch_size"].see(samples, f"feature '{name}' has {samples} samples in test batch {b}")
            need["tiemb/max_nnz"].see(nnz, f"feature '{name}' has {nnz} ids in sample {sample} of test batch {b}")
            if lk["mode"] != "gather" and width.get(name, 0) > nnz:
                need["tiemb/max_nnz"].see(width[name], f"feature '{name}' is read from an id matrix of width "
                                                      f"{width[name]} in test batch {b}")
    return need


def sample_counts(lk: dict, vals: Dict[str, np.ndarray]):
    """(samples, most ids in one sample, that sample) of one lookup's inputs."""
    ids = np.asarray(vals[lk["ids"]])
    if lk.get("id_width", -1) >= 0:     # a padded dense id matrix (or its columns): rows x width, as the op reads it
        width = lk["id_width"] or ids.shape[-1] - max(lk["id_column"], 0)
        return int(np.prod(ids.shape[:-1])), int(width), 0
    if lk["mode"] == "gather":
        if lk["id_column"] >= 0:
            return ids.shape[0], 1, 0
        samples = ids.shape[0] if ids.ndim else 1
        return samples, ids.size // max(samples, 1), 0
    seg = np.asarray(vals[lk["segment_ids"]])
    seg = (seg[:, 0] if seg.ndim == 2 else seg).astype(np.int64)
    if lk["mode"] == "safe":
        samples = int(np.asarray(vals[lk["num_rows"]]).reshape(-1)[0])
    else:
        samples = int(seg.max()) + 1 if seg.size else 0
    if not seg.size:
        return samples, 0, 0
    counts = np.bincount(seg[seg >= 0])
    return samples, int(counts.max()), int(counts.argmax())


def features_per_op(lookups: Sequence[dict], ops: Sequence[dict]) -> Need:
    """The most features (distinct id inputs) one fused op reads."""
    by_output = {lk["output"]: lk for lk in lookups}
    need = Need()
    for op in ops:
        names = list(dict.fromkeys(by_output[s]["feature"] for s in op["slots"]))
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        need.see(len(names), f"the fused op {op['name']} reads {len(names)} features (distinct id inputs: {shown})")
    return need


def engine_sizes(given: Dict[str, Optional[int]], need: Dict[str, Need], extra_batch: int = 0):
    """(sizes, inferred): the given sizes, checked against ``need``, and the
    missing ones inferred from it (at least 1; ``extra_batch``: the largest
    batch ``input_shapes`` declares for the inputs the lookups read).
    ``inferred`` says, per inferred key, the value and where it comes from.
    Raises ConfigError for a given size below what is needed."""
    sizes, inferred = {}, {}
    for key in KEYS:
        n = need[key]
        if given.get(key) is not None:
            if given[key] < n.value:
                raise ConfigError(f"{key} = {given[key]} but {n.where} (needs {key} >= {n.value})")
            sizes[key] = given[key]
            continue
        value, where = max(n.value, 1), n.where or "no lookup needs more than 1"
        if key == "tiemb/max_batch_size" and extra_batch > value:
            value, where = extra_batch, f"the largest batch input_shapes declares ({extra_batch})"
        sizes[key] = value
        inferred[key] = f"{value}: {where}"
    return sizes, inferred
