"""A bundle's lookups on tiemb's engines: the CPU engine, or the GPU engine
with the tiers of the bundle's config.

Each slot's ids, segment ids and weights are computed from the (padded)
feeds by its sources (see wiring.py); every slot returns ``bucket`` rows (or
the ids' shape for gather slots), which is what the dense module was
lowered for.
"""

from __future__ import annotations

import os
from typing import Dict, List

import numpy as np

from .format import STORE
from .wiring import compute


class SlotError(ValueError):
    pass


def _where(op: str, s: int, slot: dict) -> str:
    src = slot["ids"] or {}
    return f"slot {slot['name']!r} (op {op} slot {s}, input {src.get('input')!r})"


def _ids(slot: dict, feeds: dict, xp):
    x = compute(feeds[slot["ids"]["input"]], slot["ids"], xp)
    if slot["id_column"] >= 0:
        x = x[:, slot["id_column"]]
    return x


def column_ids(op: dict, feeds: dict, xp) -> Dict[int, object]:
    """Ids of the op's column-reading slots (a Keras model's one id matrix,
    one column per feature), made per input at once rather than per slot:
    Keras' negative ids wrapped for the whole matrix (each column by its
    table's row count), then one transposed copy whose rows are the columns,
    contiguous. Returns {slot index: 1-D ids}."""
    by_input: Dict[str, list] = {}
    for s, slot in enumerate(op["slots"]):
        if slot["id_column"] >= 0 and slot["ids"]["kind"] == "values":
            by_input.setdefault(slot["ids"]["input"], []).append(s)
    out = {}
    for name, slots in by_input.items():
        x = feeds[name]
        if any(op["slots"][s]["wrap_negative"] for s in slots):
            rows = np.zeros(x.shape[1], x.dtype)
            for s in slots:
                if op["slots"][s]["wrap_negative"]:
                    rows[op["slots"][s]["id_column"]] = op["slots"][s]["rows"]
            rows = xp.asarray(rows)
            x = xp.where((x < 0) & (x >= -rows), x + rows, x)
        t = xp.ascontiguousarray(x.T)
        for s in slots:
            out[s] = t[op["slots"][s]["id_column"]]
    return out


class CpuLookups:
    """The bundle's lookup ops on :class:`tiemb.EmbeddingEngine` (numpy in, numpy out)."""

    def __init__(self, bundle_dir: str, meta: dict):
        from .. import _C
        from ..engine import EmbeddingEngine, Slot

        store = os.path.join(bundle_dir, STORE)
        sizes = meta["engine"]
        self.engine = EmbeddingEngine(sizes["max_batch_size"], sizes["slot_num"], sizes["max_nnz"])
        table_ids = {}
        for slots in meta["ops"]:
            for slot in slots["slots"]:
                name = slot["table"]
                if name not in table_ids:
                    path = os.path.join(store, name)
                    if not os.path.isfile(path):
                        from .format import BundleError

                        raise BundleError(f"{bundle_dir} is incomplete: missing {STORE}/{name}")
                    rows = _C.read_table_rows(path, list(range(slot["rows"])))[3]
                    table_ids[name] = self.engine.add_table(rows)
        self.ops = meta["ops"]
        self.groups = [self.engine.group([
            Slot(table_ids[s["table"]], s["combiner"], s["mode"], None if s["default_id"] < 0 else s["default_id"],
                 s["out_dtype"]) for s in op["slots"]]) for op in self.ops]

    def __call__(self, feeds: Dict[str, np.ndarray], bucket: int) -> List[np.ndarray]:
        outs = []
        for op, group in zip(self.ops, self.groups):
            ids, segs, weights = [], [], []
            columns = column_ids(op, feeds, np)
            for s, slot in enumerate(op["slots"]):
                x = columns[s] if s in columns else _ids(slot, feeds, np)
                if slot["wrap_negative"] and s not in columns:
                    # Keras' Embedding reads row rows + id for -rows <= id < 0.
                    x = np.where((x < 0) & (x >= -slot["rows"]), x + slot["rows"], x)
                ids.append(np.ascontiguousarray(x) if slot["mode"] == "gather" else np.ascontiguousarray(x).ravel())
                segs.append(None if slot["mode"] == "gather" else
                            np.ascontiguousarray(compute(feeds[slot["segment_ids"]["input"]], slot["segment_ids"])))
                w = slot["weights"]
                weights.append(None if w is None else
                               np.ascontiguousarray(compute(feeds[w["input"]], w), dtype=np.float32).ravel())
            rows = [bucket if s["mode"] == "safe" else None for s in op["slots"]]
            if all(s["mode"] == "gather" for s in op["slots"]):
                segs = None
            try:
                got = group.lookup(ids, segment_ids=segs, weights=weights, num_rows=rows)
            except ValueError as e:
                raise SlotError(_rename(str(e), op)) from None
            for s, (slot, out) in enumerate(zip(op["slots"], got)):
                if slot["mode"] == "plain" and out.shape[0] != bucket:
                    # max(segment id)+1 rows: the rest of the bucket are samples without ids.
                    if out.shape[0] > bucket:
                        raise SlotError(f"{_where(op['name'], s, slot)}: segment ids reach row {out.shape[0] - 1}, "
                                        f"beyond the batch of {bucket} rows")
                    out = np.concatenate([out, np.zeros((bucket - out.shape[0],) + out.shape[1:], out.dtype)])
                outs.append(out)
        return outs


def _rename(message: str, op: dict) -> str:
    """The engine's "slot i: ..." with the slot's name and input."""
    if message.startswith("slot "):
        head, _, rest = message.partition(":")
        try:
            s = int(head.split()[1])
            return f"{_where(op['name'], s, op['slots'][s])}:{rest}"
        except (ValueError, IndexError):
            pass
    return f"op {op['name']}: {message}"


class GpuLookups:
    """The bundle's lookup ops on :class:`tiemb.GpuEmbeddingEngine` (cupy in, cupy out, no waiting).

    Gather slots are the engine's own (ids of any shape, Keras' negative-id
    wrapping); a column of an id matrix is handed over as a contiguous copy
    of that column (wrapped there when the slot wraps).
    """

    def __init__(self, bundle_dir: str, meta: dict, device: int = 0):
        import cupy

        from ..engine import Slot
        from ..gpu import GpuEmbeddingEngine

        self.cp = cupy
        self.engine = GpuEmbeddingEngine.from_store(os.path.join(bundle_dir, STORE), device)
        table_ids = {name: k for k, name in enumerate(self.engine.store_tables)}
        self.ops = meta["ops"]
        self.groups = []
        for op in self.ops:
            slots = []
            for s in op["slots"]:
                mode, combiner = s["mode"], s["combiner"]
                if mode == "plain" and (s["weights"] is None or combiner == "sum"):
                    # Same result as plain with the bucket's row count given: no row-count read back.
                    mode = "safe"
                slots.append(Slot(table_ids[s["table"]], combiner, mode,
                                  None if s["default_id"] < 0 else s["default_id"], s["out_dtype"],
                                  wrap_negative=mode == "gather" and s["wrap_negative"]))
            self.groups.append(self.engine.group(slots))

    def __call__(self, feeds, bucket: int) -> list:
        cp = self.cp
        outs = []
        for op, group in zip(self.ops, self.groups):
            ids, segs, weights, rows, shapes = [], [], [], [], []
            columns = column_ids(op, feeds, cp)
            for s, slot in enumerate(op["slots"]):
                # present_values / present_rows (feature columns' padded id
                # matrices) need a boolean-mask compaction, which waits for
                # the GPU to learn the count; fusing that into the op removes it.
                x = columns[s] if s in columns else _ids(slot, feeds, cp)
                if slot["wrap_negative"] and s in columns:
                    x = cp.where((x < 0) & (x >= -slot["rows"]), x + slot["rows"], x)
                x = cp.ascontiguousarray(x)
                if slot["mode"] == "gather":     # the engine's gather slot: ids of any shape, Keras' wrapping
                    shapes.append(None)
                    segs.append(None)
                    rows.append(None)
                else:
                    shapes.append(None)
                    x = x.reshape(-1)
                    segs.append(cp.ascontiguousarray(compute(feeds[slot["segment_ids"]["input"]],
                                                             slot["segment_ids"], cp)))
                    rows.append(bucket)
                ids.append(x)
                w = slot["weights"]
                weights.append(None if w is None else
                               cp.ascontiguousarray(compute(feeds[w["input"]], w, cp), dtype=cp.float32).reshape(-1))
            try:
                got = group.lookup(ids, segment_ids=segs, weights=weights, num_rows=rows)
            except ValueError as e:
                raise SlotError(_rename(str(e), op)) from None
            for slot, out, shape in zip(op["slots"], got, shapes):
                if shape is not None:
                    out = out.reshape(shape + (out.shape[1],))
                elif out.shape[0] < bucket:
                    # A weighted mean/sqrtn plain slot (kept plain: safe mode would prune weights <= 0)
                    # has max(segment id)+1 rows; the rest of the bucket are samples without ids.
                    out = cp.concatenate([out, cp.zeros((bucket - out.shape[0], out.shape[1]), out.dtype)])
                outs.append(out)
        return outs

    def check(self):
        """Raises the first data error (id out of range, ...) the GPU found, naming the slot."""
        for op, group in zip(self.ops, self.groups):
            try:
                group.synchronize()
            except ValueError as e:
                raise SlotError(_rename(str(e), op)) from None
