"""The embedding engine: fused multi-slot sparse lookups with TensorFlow's semantics.

Example::

    engine = tiemb.EmbeddingEngine(max_batch_size=512, slot_num=2, max_nnz=4)
    user = engine.add_table(user_table)            # float32 or float16, rows x dim
    item = engine.add_table(item_table)
    group = engine.group([tiemb.Slot(user, "mean"),
                          tiemb.Slot(item, "sum", mode="safe", default_id=0)])
    user_emb, item_emb = group.lookup(ids=[user_ids, item_ids],
                                      segment_ids=[user_rows, item_rows],
                                      num_rows=[None, 512])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import _C
from ._enums import COMBINERS, DTYPES, ROW_MODES


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """Sizes of every buffer the engine uses; nothing grows past them per call.

    Attributes:
        max_batch_size: most samples per call: the output rows of a pooled
            slot (``dense_shape[0]`` of a sparse input, never its number of
            ids), the leading dimension of a gather slot's ids.
        slot_num: most features (distinct id inputs) one lookup group serves;
            slots that read the same ids (``Slot.feature``) count once.
        max_nnz: most ids one sample has in one slot (the width of a
            ``[batch, k]`` id matrix); a call may carry at most
            ``max_batch_size * max_nnz`` ids per slot.
        num_threads: CPU threads used by lookups (0 = all cores).
    """

    max_batch_size: int
    slot_num: int
    max_nnz: int
    num_threads: int = 0

    def validate(self) -> "EngineConfig":
        _positive_int("max_batch_size", self.max_batch_size)
        _positive_int("slot_num", self.slot_num)
        _positive_int("max_nnz", self.max_nnz)
        if isinstance(self.num_threads, bool) or not isinstance(self.num_threads, (int, np.integer)) \
                or self.num_threads < 0:
            raise ValueError(f"num_threads must be an int >= 0 (0 = all cores), got {self.num_threads!r}")
        if self.max_batch_size * self.max_nnz >= 2**31:
            raise ValueError("max_batch_size * max_nnz must be < 2**31, got "
                             f"{self.max_batch_size} * {self.max_nnz}")
        return self


@dataclass(frozen=True)
class Slot:
    """One feature of a lookup group.

    Attributes:
        table: table id returned by :meth:`EmbeddingEngine.add_table`.
        combiner: ``"sum"``, ``"mean"`` or ``"sqrtn"``.
        mode: ``"plain"`` (``tf.nn.embedding_lookup_sparse``: ``max(segment_id)+1``
            output rows, every id must be valid), ``"gather"`` (``tf.gather`` /
            Keras ``Embedding``: one output row per id, no segment ids; CPU only) or ``"safe"``
            (``tf.nn.safe_embedding_lookup_sparse``: the caller gives the row
            count, ids < 0 and, unless the combiner is sum, weights <= 0 are
            pruned, empty rows are zeros or the ``default_id`` row).
        default_id: safe mode only: the row returned for samples with no valid id.
        output_dtype: ``"float32"`` or ``"float16"``; None = the table's dtype,
            which is what TensorFlow returns.
        feature: the feature (distinct id input) the slot reads: slots with the
            same int share their ids (several tables looked up with the same
            ids) and count once against the engine's ``slot_num``; None = a
            feature of its own.
        wrap_negative: gather mode: an id ``i < 0`` reads row ``rows + i``, as
            Keras ``Embedding`` does (ids below ``-rows`` are out of range).
    """

    table: int
    combiner: str = "mean"
    mode: str = "plain"
    default_id: Optional[int] = None
    output_dtype: Optional[str] = None
    feature: Optional[int] = None
    wrap_negative: bool = False

    def validate(self) -> "Slot":
        if self.combiner not in COMBINERS:
            raise ValueError(f"combiner must be one of {sorted(COMBINERS)}, got {self.combiner!r}")
        if self.mode not in ROW_MODES:
            raise ValueError(f"mode must be one of {sorted(ROW_MODES)}, got {self.mode!r}")
        if self.default_id is not None:
            if self.mode != "safe":
                raise ValueError(f"default_id is only meaningful in safe mode, got mode {self.mode!r}")
            if isinstance(self.default_id, bool) or not isinstance(self.default_id, (int, np.integer)) \
                    or self.default_id < 0:
                raise ValueError(f"default_id must be an int >= 0 or None, got {self.default_id!r}")
        if self.output_dtype not in (None, "float32", "float16"):
            raise ValueError(f"output_dtype must be 'float32', 'float16' or None, got {self.output_dtype!r}")
        if self.feature is not None and (isinstance(self.feature, bool) or not isinstance(self.feature, (int, np.integer))
                                         or self.feature < 0):
            raise ValueError(f"feature must be an int >= 0 or None, got {self.feature!r}")
        if self.wrap_negative not in (False, True) or (self.wrap_negative and self.mode != "gather"):
            raise ValueError(f"wrap_negative is a gather-mode option (True or False), got {self.wrap_negative!r} "
                             f"in mode {self.mode!r}")
        return self


class EmbeddingEngine:
    """Owns embedding tables and the CPU worker threads.

    Args:
        max_batch_size, slot_num, max_nnz, num_threads: see :class:`EngineConfig`;
            or pass ``config=EngineConfig(...)`` instead.

    Add every table with :meth:`add_table` before creating the first group with
    :meth:`group`; from then on the engine is read-only and can be shared by
    any number of groups and threads.
    """

    def __init__(self, max_batch_size: Optional[int] = None, slot_num: Optional[int] = None,
                 max_nnz: Optional[int] = None, num_threads: int = 0, *,
                 config: Optional[EngineConfig] = None):
        if config is None:
            config = EngineConfig(max_batch_size, slot_num, max_nnz, num_threads)
        self.config = config.validate()
        self._engine = _C.CpuEngine(config.max_batch_size, config.slot_num, config.max_nnz,
                                    config.num_threads)

    @property
    def num_threads(self) -> int:
        return self._engine.num_threads

    @property
    def num_tables(self) -> int:
        return self._engine.num_tables

    def add_table(self, weights: np.ndarray) -> int:
        """Copies a 2-D float32 or float16 array (rows x dim) into the engine; returns its id."""
        if not isinstance(weights, np.ndarray):
            raise ValueError(f"table must be a numpy array, got {type(weights).__name__}")
        return self._engine.add_table(weights)

    def add_remote_table(self, remote) -> int:
        """Adds a table whose rows live in a Redis Cluster (a
        ``tiemb._C.RemoteTable``, see :mod:`tiemb.distributed`); returns its id."""
        return self._engine.add_remote_table(remote)

    def table_shape(self, table: int) -> tuple:
        """(rows, dim, dtype name) of a table."""
        return self._engine.table_info(table)

    def group(self, slots: Sequence[Slot]) -> "LookupGroup":
        """A lookup group serving ``slots`` in one call each; see :class:`LookupGroup`."""
        return LookupGroup(self, slots)


def lookup_lists(n: int, ids, segment_ids, row_offsets, weights, num_rows, check_ids: bool = True):
    """The per-slot lists a lookup passes on: ids, segments (segment ids or row
    offsets, exactly one given), weights (None for all), row counts (-1 = not given)."""
    if segment_ids is not None and row_offsets is not None:
        raise ValueError("give exactly one of segment_ids and row_offsets")
    given = segment_ids if segment_ids is not None else row_offsets
    segments = [None] * n if given is None else list(given)  # None entries: gather-mode slots
    ids = list(ids)
    weights = [None] * n if weights is None else list(weights)
    if num_rows is None:
        rows = [-1] * n
    elif isinstance(num_rows, (int, np.integer)):
        rows = [int(num_rows)] * n
    else:
        rows = [-1 if r is None else int(r) for r in num_rows]
    if check_ids and len(ids) != n:
        raise ValueError(f"lookup got ids for {len(ids)} slots but the group has {n}")
    return ids, segments, weights, rows


def slot_features(slots: Sequence[Slot]) -> list:
    """Per slot its feature index for the core, -1 for a feature of its own."""
    return [-1 if s.feature is None else int(s.feature) for s in slots]


def checked_slots(engine, slots: Sequence[Slot]):
    """Validates slots against an engine's tables; returns (slots, output dtype codes)."""
    slots = list(slots)
    out_dtypes = []
    for i, s in enumerate(slots):
        if not isinstance(s, Slot):
            raise ValueError(f"slot {i}: expected tiemb.Slot, got {type(s).__name__}")
        try:
            s.validate()
        except ValueError as e:
            raise ValueError(f"slot {i}: {e}") from None
        if not isinstance(s.table, (int, np.integer)) or not 0 <= s.table < engine.num_tables:
            raise ValueError(f"slot {i}: table id {s.table!r} does not exist "
                             f"(engine has {engine.num_tables} tables)")
        out_dtypes.append(DTYPES[s.output_dtype or engine.table_shape(s.table)[2]])
    return slots, out_dtypes


class LookupGroup:
    """A fixed list of slots looked up together (one parallel pass per call).

    Calls on one group are serialised; give each concurrent caller its own group.
    """

    def __init__(self, engine: EmbeddingEngine, slots: Sequence[Slot]):
        slots, out_dtypes = checked_slots(engine, slots)
        self.slots = tuple(slots)
        self._group = _C.CpuLookupGroup(
            engine._engine,
            [int(s.table) for s in slots],
            [COMBINERS[s.combiner] for s in slots],
            [ROW_MODES[s.mode] for s in slots],
            [-1 if s.default_id is None else int(s.default_id) for s in slots],
            out_dtypes,
            slot_features(slots),
            [bool(s.wrap_negative) for s in slots],
        )

    def lookup(self, ids: Sequence[np.ndarray], segment_ids: Optional[Sequence[np.ndarray]] = None,
               row_offsets: Optional[Sequence[np.ndarray]] = None,
               weights: Optional[Sequence[Optional[np.ndarray]]] = None,
               num_rows=None) -> list:
        """Looks up every slot; returns one ``rows x dim`` array per slot.

        Args:
            ids: per slot, a 1-D int32/int64 array of ids; for a safe slot
                without segment ids, a 2-D ``[rows, k]`` id matrix padded
                with negative ids (each row pools its ids >= 0: a padded
                multi-hot feature, or a -1-padded dense id tensor).
            segment_ids: per slot, the sorted sample index of each id (what
                ``sp_ids.indices[:, 0]`` is for a ``tf.SparseTensor``); None
                for gather-mode slots (may be omitted when all slots gather).
            row_offsets: instead of segment_ids, per slot CSR offsets
                (``rows + 1`` entries; sample r owns ids[offsets[r]:offsets[r+1]]).
            weights: None, or per slot a 1-D float32 array (or None) of per-id weights
                (``[rows, k]`` for a dense id matrix).
            num_rows: safe mode with segment_ids: the batch size (``dense_shape[0]``);
                an int for every slot or a sequence with one entry (int or None) per slot.

        Raises:
            ValueError: naming the slot, for wrong dtypes or shapes, ids out of
                range, unsorted or negative segment ids, mismatched lengths, or
                more ids than ``max_batch_size * max_nnz``.
        """
        ids, segments, weights, rows, samples, shapes = self._inputs(ids, segment_ids, row_offsets, weights, num_rows)
        outs = self._group.lookup(ids, segments, row_offsets is not None, weights, rows, samples)
        for s, shape in shapes.items():
            outs[s] = outs[s].reshape(shape + (outs[s].shape[1],))
        return outs

    __call__ = lookup

    def _inputs(self, ids, segment_ids, row_offsets, weights, num_rows):
        """The per-slot lists the core takes, and per gather slot of rank != 1
        its ids' shape: such ids are [samples, ...] (flattened, their samples
        given), a dense id matrix stays 2-D, its weights flattened."""
        ids, segments, weights, rows = lookup_lists(len(self.slots), ids, segment_ids, row_offsets, weights,
                                                    num_rows, check_ids=False)
        shapes, samples = {}, [-1] * len(ids)
        for s, slot in enumerate(self.slots[:len(ids)]):
            if slot.mode == "gather" and isinstance(ids[s], np.ndarray) and ids[s].ndim != 1:
                shapes[s] = ids[s].shape
                samples[s] = ids[s].shape[0] if ids[s].ndim else 1
                ids[s] = ids[s].reshape(-1)
        for s, slot in enumerate(self.slots[:len(weights)]):   # a dense id matrix's weights: same shape
            if slot.mode == "safe" and isinstance(weights[s], np.ndarray) and weights[s].ndim == 2:
                weights[s] = weights[s].reshape(-1)
        return ids, segments, weights, rows, samples, shapes

    def time_lookup(self, ids, segment_ids=None, row_offsets=None, weights=None, num_rows=None,
                    repeats: int = 50) -> list:
        """Seconds per call of ``repeats`` back-to-back lookups of the same
        inputs (arguments as :meth:`lookup`), timed around the engine call
        alone (outputs allocated once): the engine's own time, for comparing
        with the TensorFlow op's traced span. Nothing is returned but times."""
        ids, segments, weights, rows, samples, _ = self._inputs(ids, segment_ids, row_offsets, weights, num_rows)
        return list(self._group.time_lookup(ids, segments, row_offsets is not None, weights, rows, samples,
                                            int(repeats)))
