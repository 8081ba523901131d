"""The GPU engine: one fused CUDA launch for all slots, over resident or tiered tables.

Example::

    engine = tiemb.GpuEmbeddingEngine(max_batch_size=512, slot_num=26, max_nnz=10)
    t = engine.add_table(table)                                     # GPU-resident
    big = engine.add_table(big_table, tiers=tiemb.TierConfig(cache_percentage=0.2),
                           profile_ids=sample_ids)                   # tiered, warm from a profile
    group = engine.group([tiemb.Slot(t, "mean"), tiemb.Slot(big, "sum")])
    outs = group.lookup([ids_a, ids_b], segment_ids=[seg_a, seg_b])  # cupy in -> cupy out, async
    group.synchronize()                                              # raises data errors, if any

numpy inputs work too: they are staged through pinned buffers and the call
returns numpy arrays after waiting for the GPU.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from . import _C
from ._enums import COMBINERS, DTYPES, ROW_MODES
from .config import PARAMETERS
from .engine import EngineConfig, Slot, checked_slots, lookup_lists, slot_features

_TYPESTR = {"<i4": DTYPES["int32"], "<i8": DTYPES["int64"], "<f4": DTYPES["float32"], "<f2": DTYPES["float16"]}


def _require_cuda():
    if not _C.cuda_compiled():
        raise RuntimeError("this tiemb build has no CUDA part (nvcc was not found when it was built); "
                           "rebuild with nvcc on PATH or TIEMB_CUDA=ON")
    if _C.cuda_device_count() == 0:
        raise RuntimeError("no CUDA GPU is visible (no driver, or CUDA_VISIBLE_DEVICES hides them)")


@dataclass(frozen=True)
class TierConfig:
    """How one table's rows are split over GPU cache, host memory and a backing file.

    The defaults are the ``tiemb/*`` parameters' (:mod:`tiemb.config`): a GPU
    cache of 20% of the rows over a host tier holding all of them.

    Attributes:
        cache_percentage: share of rows in the GPU cache, in (0, 1]; 1 keeps the
            whole table on the GPU and skips the cache probe.
        cpu_cache_percentage: share of rows in pinned host memory, in [0, 1];
            rows beyond it are read from ``backing_file`` on demand.
        hit_rate_threshold: per batch: below it, misses are inserted into the
            GPU cache before the lookup returns (in stream order); at or above
            it, on a background stream. Results are exact either way.
        backing_file: path of the table file (written when the table is added)
            for rows outside host memory.
        host_read: ``"zero_copy"`` (the kernel reads host-tier rows in place)
            or ``"copy"`` (the host gathers them and copies in one transfer).
        policy: ``"lru"`` (evict the least recently used way), or
            ``"lru_admit"``: the same victim, but a miss replaces it only if
            the miss's row was seen in more batches (counted per row in GPU
            memory, 4 bytes per row, starting from ``profile_ids``' counts);
            fewer inserts and a higher hit rate on flat power-law traffic
            (``tiemb advise --policies`` simulates both). Results are exact
            either way.
    """

    cache_percentage: float = PARAMETERS["tiemb/cache_percentage"][1]
    cpu_cache_percentage: float = PARAMETERS["tiemb/cpu_cache_percentage"][1]
    hit_rate_threshold: float = PARAMETERS["tiemb/hit_rate_threshold"][1]
    backing_file: Optional[str] = None
    host_read: str = "zero_copy"
    policy: str = "lru"

    def validate(self, rows: int) -> "TierConfig":
        for name in ("cache_percentage", "cpu_cache_percentage", "hit_rate_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{name} must be a number, got {v!r}")
        if self.host_read not in ("zero_copy", "copy"):
            raise ValueError(f"host_read must be 'zero_copy' or 'copy', got {self.host_read!r}")
        if self.policy not in ("lru", "lru_admit"):
            raise ValueError(f"policy must be 'lru' or 'lru_admit', got {self.policy!r}")
        _C.validate_tiers(rows, float(self.cache_percentage), float(self.cpu_cache_percentage),
                          float(self.hit_rate_threshold), self.backing_file or "")
        return self


RESIDENT = TierConfig(cache_percentage=1.0)


def with_tier_rates(st: dict) -> dict:
    """Adds gpu_hit_rate, host_hit_rate and backing_hit_rate to engine counters.

    host_fetches counts every miss the host gathers (backing-file rows, and
    host-tier rows in "copy" mode); backing_reads only the backing file's, so
    the host tier's share is host_hits + host_fetches - backing_reads."""
    st = dict(st)
    if st.get("rows_file", 0) == 0 and st.get("rows_host", 0) == 0:  # resident
        st.update(gpu_hit_rate=1.0, host_hit_rate=0.0, backing_hit_rate=0.0)
        return st
    u = st["unique_ids"]
    host = st["host_hits"] + st["host_fetches"] - st["backing_reads"]
    st.update(gpu_hit_rate=st["hits"] / u if u else 0.0, host_hit_rate=host / u if u else 0.0,
              backing_hit_rate=st["backing_reads"] / u if u else 0.0)
    return st


def _default_stream() -> int:
    cupy = sys.modules.get("cupy")
    return cupy.cuda.get_current_stream().ptr if cupy is not None else 0


def _stream_ptr(stream) -> int:
    if stream is None:
        return _default_stream()
    if isinstance(stream, int):
        return stream
    ptr = getattr(stream, "ptr", None)  # cupy.cuda.Stream
    if ptr is None:
        ptr = getattr(stream, "cuda_stream", None)  # torch.cuda.Stream
    if ptr is None:
        raise ValueError(f"stream must be an int (cudaStream_t), a cupy or torch stream, got {type(stream).__name__}")
    return int(ptr)


def _as_device_array(obj):
    """`obj` if it has __cuda_array_interface__; a zero-copy cupy view of a
    DLPack producer (JAX, for one) otherwise; None for anything else."""
    if hasattr(obj, "__cuda_array_interface__"):
        return obj
    if hasattr(obj, "__dlpack__"):
        import cupy

        return cupy.from_dlpack(obj)
    return None


def _device_view(obj, slot: int, what: str, allowed: tuple, ndims=(1,)):
    """(address, dtype code, shape, element strides) of a device array of an allowed dtype and rank."""
    cai = obj.__cuda_array_interface__
    ts, shape, strides = cai["typestr"], tuple(cai["shape"]), cai.get("strides")
    name = np.dtype(ts).name
    if ts not in _TYPESTR or _TYPESTR[ts] not in allowed:
        kinds = " or ".join(k for k, v in DTYPES.items() if v in allowed)
        raise ValueError(f"slot {slot}: {what} must be {kinds}, got {name}")
    if len(shape) not in ndims:
        raise ValueError(f"slot {slot}: {what} must be {' or '.join(f'{d}-D' for d in ndims)}, got {len(shape)}-D")
    item = np.dtype(ts).itemsize
    if strides is None:      # C-contiguous
        elems = tuple(int(np.prod(shape[k + 1:])) for k in range(len(shape)))
    else:
        if any(st % item or st < 0 for st in strides):
            raise ValueError(f"slot {slot}: {what} has strides {strides} that are not whole, non-negative "
                             "elements (use cupy.ascontiguousarray)")
        elems = tuple(st // item for st in strides)
    # A dimension of size 1 may carry any stride: it is never stepped over.
    elems = tuple(1 if n <= 1 and k == len(shape) - 1 else e for k, (n, e) in enumerate(zip(shape, elems)))
    return int(cai["data"][0]), _TYPESTR[ts], shape, elems


def _contiguous(shape, elems) -> bool:
    return all(e == int(np.prod(shape[k + 1:])) for k, e in enumerate(elems) if shape[k] > 1)


def _ids_view(obj, slot: int, mode: str, has_segments: bool):
    """The binding's view of a slot's device ids, and its samples (gather, else -1):
    1-D ids (any stride: one column of an id matrix is read in place); a gather
    slot's C-contiguous ids of any rank ([samples, ...]); a safe slot's dense
    [rows, k] id matrix when it has no segment ids (ids < 0 are padding)."""
    ptr, code, shape, elems = _device_view(obj, slot, "ids", _INDEX, ndims=(0, 1, 2, 3, 4))
    if len(shape) == 1:
        return (ptr, code, shape[0], elems[0] or 1, 0, 0), (shape[0] if mode == "gather" else -1)
    if mode == "gather":
        if not _contiguous(shape, elems):
            raise ValueError(f"slot {slot}: gather ids of rank {len(shape)} must be C-contiguous "
                             "(one column of an id matrix may be strided)")
        return (ptr, code, int(np.prod(shape)), 1, 0, 0), (shape[0] if shape else 1)
    if len(shape) == 2 and mode == "safe" and not has_segments:
        return (ptr, code, shape[0] * shape[1], elems[1], shape[1], elems[0]), -1
    raise ValueError(f"slot {slot}: ids must be 1-D (or, in safe mode without segment ids, a [rows, k] id "
                     f"matrix), got {len(shape)}-D")


def _segments_view(obj, slot: int, what: str):
    """1-D segment ids or row offsets (any stride), or sp_ids.indices ([n, rank]: column 0, read in place)."""
    ptr, code, shape, elems = _device_view(obj, slot, what, _INDEX, ndims=(1, 2))
    return ptr, code, shape[0], elems[0] or 1


_INDEX = (DTYPES["int32"], DTYPES["int64"])


class GpuEmbeddingEngine:
    """Owns the tables of one GPU (resident or tiered).

    Args:
        max_batch_size, slot_num, max_nnz: see :class:`tiemb.EngineConfig`; all
            scratch, staging and cache buffers are sized from them once.
        device: CUDA device ordinal.
    """

    def __init__(self, max_batch_size: Optional[int] = None, slot_num: Optional[int] = None,
                 max_nnz: Optional[int] = None, device: int = 0, *, config: Optional[EngineConfig] = None):
        _require_cuda()
        if config is None:
            config = EngineConfig(max_batch_size, slot_num, max_nnz)
        self.config = config.validate()
        self.device = device
        self._engine = _C.GpuEngine(config.max_batch_size, config.slot_num, config.max_nnz, device)

    @classmethod
    def from_store(cls, store: str, device: int = 0) -> "GpuEmbeddingEngine":
        """The engine the TensorFlow op's GPU kernel serves a table store with
        (one per store and device per process; tables in the order of the
        store's ``store.json``, tiers from it: the tiemb/* defaults where it
        has none)."""
        _require_cuda()
        self = cls.__new__(cls)
        self.device = device
        self._engine = _C.GpuEngine.from_store(store, device)
        manifest = _C.read_store_manifest(store)
        self.config = EngineConfig(manifest["max_batch_size"], manifest["slot_num"], manifest["max_nnz"]).validate()
        self.store_tables = list(self._engine.store_tables)
        return self

    @property
    def num_tables(self) -> int:
        return self._engine.num_tables

    def add_table(self, weights: np.ndarray, tiers: Optional[TierConfig] = None, profile_ids=None) -> int:
        """Adds a 2-D float32/float16 host array (rows x dim); returns its id.

        Args:
            tiers: how rows are split over the tiers; None keeps the whole
                table on the GPU (``TierConfig(cache_percentage=1.0)``).
            profile_ids: sample ids (e.g. the test data) whose frequencies pick
                the rows that start in the GPU cache and host tier; without
                them the first rows do.
        """
        if not isinstance(weights, np.ndarray):
            raise ValueError(f"table must be a numpy array, got {type(weights).__name__}")
        tiers = tiers or RESIDENT
        if weights.ndim == 2:
            tiers.validate(weights.shape[0])
        if profile_ids is not None:
            profile_ids = np.ascontiguousarray(profile_ids, dtype=np.int64).ravel()
        return self._engine.add_table(weights, float(tiers.cache_percentage), float(tiers.cpu_cache_percentage),
                                      float(tiers.hit_rate_threshold), tiers.backing_file or "",
                                      tiers.host_read == "zero_copy", profile_ids, tiers.policy == "lru_admit")

    def add_remote_table(self, remote, tiers: Optional[TierConfig] = None, profile_ids=None) -> int:
        """Adds a table whose rows live in a Redis Cluster; returns its id.

        Args:
            remote: a ``tiemb._C.RemoteTable`` (see :mod:`tiemb.distributed`):
                its host tier and the cluster are the tiers below the GPU cache.
            tiers: ``cache_percentage``, ``hit_rate_threshold`` and
                ``policy`` are used (``cpu_cache_percentage``,
                ``backing_file`` and ``host_read`` are not: the host tier is
                the remote table's); None keeps the whole table on the GPU,
                read from the cluster once here.
            profile_ids: sample ids whose frequencies pick the rows that start
                in the GPU cache.

        Each call's GPU-cache misses of every remote table are read by the
        host in one pipelined batch (at most one round trip per cluster
        node), exactly. The GPU copy follows the remote table's version
        switches (``DistributedTables.refresh()`` or its refresh period): a
        call that starts after a switch serves the new rows (the cache ways
        of the changed ids cleared, or resident rows rewritten, at that call).
        """
        tiers = tiers or RESIDENT
        tiers.validate(remote.rows)
        if profile_ids is not None:
            profile_ids = np.ascontiguousarray(profile_ids, dtype=np.int64).ravel()
        return self._engine.add_remote_table(remote, float(tiers.cache_percentage), float(tiers.hit_rate_threshold),
                                             profile_ids, tiers.policy == "lru_admit")

    def table_shape(self, table: int) -> tuple:
        return self._engine.table_info(table)

    def stats(self, table: int) -> dict:
        """Counters of a table: lookups, unique_ids, hits, host_hits, host_fetches,
        backing_reads, inserted, batches, sync_inserts, hit_rate,
        rows_gpu/rows_host/rows_file, and the share of unique ids (per batch,
        summed) each tier served: gpu_hit_rate (= hit_rate), host_hit_rate
        (pinned host memory, read in place or copied), backing_hit_rate (the
        backing file). A resident table serves every id from the GPU
        (gpu_hit_rate 1). Waits for the GPU."""
        return with_tier_rates(self._engine.stats(table))

    def group(self, slots: Sequence[Slot]) -> "GpuLookupGroup":
        return GpuLookupGroup(self, slots)


class GpuPreparedLookup:
    """A lookup over fixed device buffers: ``run()`` launches it again."""

    def __init__(self, handle, outputs):
        self._handle = handle
        self.outputs = outputs

    def run(self):
        self._handle.run()
        return self.outputs


class GpuLookupGroup:
    """Slots looked up together in one launch on the engine's GPU."""

    def __init__(self, engine: GpuEmbeddingEngine, slots: Sequence[Slot]):
        slots, out_dtypes = checked_slots(engine, slots)
        self.slots = tuple(slots)
        self.engine = engine
        self._dims = [engine.table_shape(s.table)[1] for s in slots]
        self._out_dtypes = [np.float16 if d == DTYPES["float16"] else np.float32 for d in out_dtypes]
        self._group = _C.GpuLookupGroup(
            engine._engine, [int(s.table) for s in slots], [COMBINERS[s.combiner] for s in slots],
            [ROW_MODES[s.mode] for s in slots], [-1 if s.default_id is None else int(s.default_id) for s in slots],
            out_dtypes, slot_features(slots), [bool(s.wrap_negative) for s in slots])

    def _normalise(self, ids, segment_ids, row_offsets, weights, num_rows):
        return lookup_lists(len(self.slots), ids, segment_ids, row_offsets, weights, num_rows)

    def _device_inputs(self, ids, segments, weights, offsets):
        what = "row_offsets" if offsets else "segment_ids"
        ids = [_as_device_array(a) if not isinstance(a, np.ndarray) else a for a in ids]
        segments = [a if a is None or isinstance(a, np.ndarray) else _as_device_array(a) for a in segments]
        weights = [w if w is None or isinstance(w, np.ndarray) else _as_device_array(w) for w in weights]
        for s, a in enumerate(ids + segments):
            slot = s % len(ids)
            if a is None and s >= len(ids):
                continue                          # a gather slot or a dense id matrix: no segment ids
            if a is None or not hasattr(a, "__cuda_array_interface__"):
                raise ValueError(f"slot {slot}: mix of device and host arrays, or an array that is "
                                 "neither numpy, __cuda_array_interface__ nor DLPack; give all inputs on the "
                                 "GPU or all as numpy")
        dev_ids, samples = [], []
        for s, a in enumerate(ids):
            view, n = _ids_view(a, s, self.slots[s].mode, segments[s] is not None)
            dev_ids.append(view)
            samples.append(n)
        dev_segs = [None if a is None else _segments_view(a, s, what) for s, a in enumerate(segments)]
        dev_w = []
        for s, w in enumerate(weights):
            if w is None:
                dev_w.append(None)
                continue
            ptr, _, shape, elems = _device_view(w, s, "weights", (DTYPES["float32"],), ndims=(1, 2))
            if not _contiguous(shape, elems):
                raise ValueError(f"slot {s}: weights must be C-contiguous (use cupy.ascontiguousarray)")
            dev_w.append((ptr, int(np.prod(shape))))
        return dev_ids, dev_segs, dev_w, samples

    def _outputs(self, rows, out):
        if out is not None:
            out = list(out)
            if len(out) != len(self.slots):
                raise ValueError(f"out has {len(out)} entries but the group has {len(self.slots)} slots")
            ptrs = []
            for s, (o, r) in enumerate(zip(out, rows)):
                cai = o.__cuda_array_interface__
                want = (r, self._dims[s])
                if tuple(cai["shape"]) != want or np.dtype(cai["typestr"]) != np.dtype(self._out_dtypes[s]):
                    raise ValueError(f"slot {s}: out must be a {np.dtype(self._out_dtypes[s]).name} array of "
                                     f"shape {want}, got {np.dtype(cai['typestr']).name} {tuple(cai['shape'])}")
                if cai.get("strides") not in (None, (self._dims[s] * np.dtype(self._out_dtypes[s]).itemsize,
                                                     np.dtype(self._out_dtypes[s]).itemsize)):
                    raise ValueError(f"slot {s}: out must be C-contiguous")
                ptrs.append(int(cai["data"][0]))
            return out, ptrs
        import cupy  # device outputs are allocated through cupy's pool

        out = [cupy.empty((r, d), dtype=t) for r, d, t in zip(rows, self._dims, self._out_dtypes)]
        return out, [int(o.data.ptr) for o in out]

    def lookup(self, ids, segment_ids=None, row_offsets=None, weights=None, num_rows=None, out=None, stream=None):
        """Looks up every slot; arguments as :meth:`tiemb.LookupGroup.lookup`.

        numpy inputs: validated on the host, computed on the GPU, returned as
        numpy arrays after the GPU finishes. Device inputs (cupy, or anything
        with ``__cuda_array_interface__``): returns device arrays (``out``, or
        new cupy arrays) without waiting; data errors found on the GPU (ids
        out of range, unsorted segment ids) are raised by :meth:`synchronize`
        or by the next lookup on this group. Plain-mode slots read their row
        count back from the GPU (one small wait, as TensorFlow's GPU kernel);
        safe-mode slots and :meth:`prepare` do not.

        Args:
            out: device arrays to write (one per slot, rows x dim, the slot's dtype).
            stream: cudaStream_t as int, or a cupy/torch stream; default cupy's current stream.
        """
        ids, segments, weights, rows = self._normalise(ids, segment_ids, row_offsets, weights, num_rows)
        if all(isinstance(a, np.ndarray) for a in ids):
            if out is not None:
                raise ValueError("out= is only for device inputs; numpy inputs return new numpy arrays")
            # Gather slots take ids of any shape ([samples, ...]); the output gets the ids' shape + [dim].
            shapes, samples = {}, [-1] * len(ids)
            for s, slot in enumerate(self.slots[:len(ids)]):
                if slot.mode == "gather" and ids[s].ndim != 1:
                    shapes[s], samples[s] = ids[s].shape, (ids[s].shape[0] if ids[s].ndim else 1)
                    ids[s] = np.ascontiguousarray(ids[s]).reshape(-1)
            outs = self._group.lookup_host(ids, segments, row_offsets is not None, weights, rows, samples)
            return [o.reshape(shapes[s] + (o.shape[1],)) if s in shapes else o for s, o in enumerate(outs)]
        return self._bind(ids, segments, weights, rows, row_offsets is not None, out, stream).run()

    def prepare(self, ids, segment_ids=None, row_offsets=None, weights=None, num_rows=None, out=None,
                stream=None) -> GpuPreparedLookup:
        """Binds device inputs and outputs once; ``run()`` relaunches with no
        per-slot work in Python, for serving loops and CUDA-graph capture. The
        inputs are read again at every run (refill them in place)."""
        ids, segments, weights, rows = self._normalise(ids, segment_ids, row_offsets, weights, num_rows)
        return self._bind(ids, segments, weights, rows, row_offsets is not None, out, stream)

    def _bind(self, ids, segments, weights, rows, offsets: bool, out, stream) -> GpuPreparedLookup:
        """Device inputs checked, output row counts known, outputs allocated: a lookup ready to run."""
        stream = _stream_ptr(stream)
        dev_ids, dev_segs, dev_w, samples = self._device_inputs(ids, segments, weights, offsets)
        out_rows = self._group.device_rows(dev_ids, dev_segs, offsets, dev_w, rows, samples, stream)
        given = out is not None          # the caller's arrays stay as given: (rows, dim)
        out, ptrs = self._outputs(out_rows, out)
        handle = self._group.prepare(dev_ids, dev_segs, offsets, dev_w, rows, samples, out_rows, ptrs, stream)
        # A gather slot's output has its ids' shape + [dim] (a view of the rows written).
        shaped = [o.reshape(tuple(ids[s].__cuda_array_interface__["shape"]) + (self._dims[s],))
                  if not given and self.slots[s].mode == "gather" and len(ids[s].__cuda_array_interface__["shape"]) != 1
                  else o
                  for s, o in enumerate(out)]
        return GpuPreparedLookup(handle, shaped)

    def synchronize(self):
        """Waits for this group's last lookup and raises the first data error it found."""
        self._group.check(True)

    def prefetch(self, ids, stream=None):
        """Brings the rows of ``ids`` that are not in the GPU cache into it, on
        the group's background stream, so a server can fetch the next batch's
        misses while the current batch runs (issue 15). Results stay exact: a
        later lookup finds a row in the cache or reads the lower tier as
        always; concurrent lookups and inserts are safe (sequence locks).

        Args:
            ids: one id array per slot, as for :meth:`lookup` (segment ids,
                weights and row counts are not needed). Device arrays (cupy,
                ``__cuda_array_interface__``, DLPack) are read asynchronously
                after ``stream``'s work so far: keep them unchanged until
                :meth:`wait_prefetch` or the lookup that uses them (changed
                ids bring other rows; results stay exact). numpy arrays are
                checked here (an id outside its table is an error naming the
                slot, position and value) and copied to the device. Device
                ids outside their table are skipped (the lookup that uses them
                reports them). Slots over GPU-resident tables are ignored.
            stream: the stream the ids are ready on (int cudaStream_t, cupy or
                torch stream; default cupy's current stream); not one that is
                capturing a CUDA graph (a ValueError).

        Returns without waiting where every tiered table reads its misses in
        place (``host_read="zero_copy"`` and all rows in host memory);
        otherwise after the host has read this prefetch's misses. The first
        call allocates the prefetch scratch (as large as a lookup's), once.
        With ``policy="lru_admit"`` a prefetched row enters the cache only if
        the admission filter admits it. Rows a prefetch inserts count in
        :meth:`GpuEmbeddingEngine.stats`' ``inserted``; nothing else counts.
        """
        ids = list(ids) if isinstance(ids, (list, tuple)) else [ids]
        if len(ids) != len(self.slots):
            raise ValueError(f"prefetch got ids for {len(ids)} slots but the group has {len(self.slots)}")
        keep, views, ptr = [], [], _stream_ptr(stream)
        for s, a in enumerate(ids):
            if isinstance(a, np.ndarray):
                a = self._checked_host_ids(a, s)
                import cupy

                # Copied on the stream the prefetch waits for.
                with (cupy.cuda.ExternalStream(ptr) if ptr else cupy.cuda.Stream.null):
                    a = cupy.asarray(a)
            dev = _as_device_array(a)
            if dev is None:
                raise ValueError(f"slot {s}: prefetch ids must be numpy, __cuda_array_interface__ or DLPack "
                                 f"arrays, got {type(a).__name__}")
            views.append(_ids_view(dev, s, self.slots[s].mode, False)[0])
            keep.append(dev)
        # Alive until the next prefetch. Only the prefetch's dedup reads them, on
        # the background stream, possibly after that: memory reused by then
        # yields other ids, which are range-checked there and only change which
        # rows are brought in, never a result (a lookup reads every tier as always).
        self._prefetch_ids = keep
        self._group.prefetch(views, ptr)

    def _checked_host_ids(self, a: np.ndarray, slot: int) -> np.ndarray:
        if a.dtype not in (np.int32, np.int64):
            raise ValueError(f"slot {slot}: ids must be int32 or int64, got {a.dtype}")
        rows = self.engine.table_shape(self.slots[slot].table)[0]
        flat = a.reshape(-1)
        low = -rows if self.slots[slot].wrap_negative else (None if a.ndim == 2 else 0)  # safe matrices pad with < 0
        bad = flat >= rows if low is None else (flat >= rows) | (flat < low)
        if bad.any():
            k = int(np.argmax(bad))
            lo = -rows if self.slots[slot].wrap_negative else 0
            raise ValueError(f"slot {slot}: ids[{k}] = {int(flat[k])} is out of range [{lo}, {rows}) of table "
                             f"{self.slots[slot].table}")
        return np.ascontiguousarray(a)

    def wait_prefetch(self):
        """Waits for every :meth:`prefetch` issued on this group so far."""
        self._group.wait_prefetch()

    __call__ = lookup
