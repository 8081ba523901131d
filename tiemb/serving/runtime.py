"""A loaded bundle: feeds checked and padded to a bucket, then one compiled
program per bucket (the lookups as XLA custom calls on tiemb's engine, the
dense part after them), the padding cut off."""

from __future__ import annotations

import bisect
import os
import re
from typing import Dict

import numpy as np

from . import format as fmt
from . import program, xla

DEVICES = ("cpu", "gpu")
_ENGINE_ENUMS = {"combiner": {"sum": 0, "mean": 1, "sqrtn": 2}, "mode": {"plain": 0, "safe": 1, "gather": 2},
                 "dtype": {"float32": 0, "float16": 1}}   # csrc/core/types.h (keep in sync)


class SlotError(ValueError):
    """Bad data in a request that a lookup found (an id out of range, ...), naming the slot."""


class BundleModel:
    """``model(feeds)`` -> {output name: array}.

    Built by :func:`tiemb.serving.load`. Feeds are a dict of arrays, one per
    model input (the SavedModel signature's names). On the CPU: numpy in,
    numpy out. On the GPU: numpy in gives numpy out (copied back at the end);
    device arrays in (cupy, ``__cuda_array_interface__``, DLPack) give cupy
    arrays out without waiting for the GPU; data errors the GPU finds (an id
    out of range) are raised by :meth:`synchronize` or the next call.

    Each bucket is one XLA program: the lookups run as custom calls on
    tiemb's engine (python/xla_ffi.cpp) inside it, on XLA's stream, writing
    into XLA's buffers, then the dense part; nothing runs in Python per slot.
    What depends only on the bucket (the program's input order and shapes,
    the padding blocks, the transfer descriptors) is worked out at load, so
    a call checks the feeds, pads the short ones, hands them over in input
    order and runs the program.

    With ``command_buffer=True`` (GPU, resident local tables) the custom
    call is the handler XLA may trace into the program's CUDA graph: a
    replay runs no host code, so the data-error latch is read here instead,
    before each call (an error of an earlier call fails this one) and when
    the caller waits (:meth:`synchronize`, numpy feeds).

    Attributes:
        buckets: the batch sizes compiled; a request is padded to the next one.
        inputs, outputs: the bundle's input and output descriptions.
        meta: everything bundle.json holds.
        command_buffer: whether the lookups use the command-buffer handler.
    """

    def __init__(self, bundle_dir: str, device: str = "gpu", ordinal: int = 0, command_buffer: bool = False):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
        if command_buffer and device != "gpu":
            raise ValueError(f"command_buffer=True needs device='gpu' (XLA's CPU backend has no command buffers), "
                             f"got device={device!r}")
        self.command_buffer = bool(command_buffer)
        self._target = xla.LOOKUP_TARGET_CMDBUF if command_buffer else xla.LOOKUP_TARGET
        meta = fmt.read_meta(bundle_dir)
        self.meta, self.device_kind, self.dir = meta, device, bundle_dir
        self.buckets = sorted(int(b) for b in meta["buckets"])
        self.inputs: Dict[str, dict] = meta["inputs"]
        self.outputs = meta["outputs"]
        self._dev = xla.device(device, ordinal)
        weights = fmt.read_npz(bundle_dir, fmt.WEIGHTS)
        missing = [w for w in meta["dense"]["weights"] if w not in weights]
        if missing:
            raise fmt.BundleError(f"{bundle_dir}/{fmt.WEIGHTS} is corrupt: no weight {missing[0]!r}")
        self._weights = [xla.put(weights[w], self._dev) for w in meta["dense"]["weights"]]
        if meta["ops"]:
            xla.register_lookup_target(device, command_buffer=self.command_buffer)
        self._plans = _plans(bundle_dir, meta, device, ordinal)
        if self.command_buffer:
            for plan, op in zip(self._plans, meta["ops"]):
                if plan.capture_blocker:
                    raise ValueError(f"command_buffer=True: {_rename(plan.capture_blocker, op)}; load this bundle "
                                     "with command_buffer=False")
        self._handles = {p.handle: op for p, op in zip(self._plans, meta["ops"])}
        self._program_inputs = program.program_inputs(meta)
        # Slots over SparseTensor pieces (checked per call on the host; usually none).
        self._piece_slots = [(op, s, slot) for op in meta["ops"] for s, slot in enumerate(op["slots"])
                             if self.inputs[slot["ids"]["input"]].get("capacity")]
        # What a call looks up instead of working out: the feeds' names, dtypes, which carry the batch.
        self._input_names = frozenset(self.inputs)
        # A batched input whose other dimensions are all fixed is checked by one dtype and one tuple compare.
        self._specs = [(name, np.dtype(spec["dtype"]), spec,
                        tuple(spec["shape"][1:]) if spec["padded"] and min(spec["shape"][1:], default=0) >= 0
                        else None) for name, spec in self.inputs.items()]
        self._batch_inputs = [name for name, spec in self.inputs.items() if spec["padded"]]
        self._piece_inputs = [name for name, spec in self.inputs.items() if spec.get("capacity")]
        self._out_specs = [(o["name"], bool(o["batched"])) for o in self.outputs]
        self._pad_blocks = {}     # (array library, input, row shape) -> pad rows, made on first use
        self._programs = {b: self._compile(b) for b in self.buckets}
        max_nnz = meta["engine"]["max_nnz"]
        self._feeders = {b: xla.HostFeeder([(program.input_shape(self.inputs[n], b, max_nnz), self.inputs[n]["dtype"])
                                            for n in self._program_inputs], self._dev) for b in self.buckets}
        self._device_feeder = xla.DeviceFeeder(self._dev)
        self._dense, self._lookups_only = {}, {}

    def _compile(self, bucket: int, lookups_only: bool = False, dense_alone: bool = False) -> xla.Executable:
        name = fmt.dense_module(bucket)
        text = fmt.read_module(self.dir, name)
        try:
            if not dense_alone:
                text = program.compose(text, self.meta, bucket, [p.handle for p in self._plans], lookups_only,
                                       target=self._target)
            return xla.Executable(text, self._dev)
        except fmt.BundleError:
            raise
        except Exception as e:    # XLA's parse / compile errors
            raise fmt.BundleError(f"{self.dir}/{name} does not compile: {str(e).splitlines()[0][:300]}") from None

    # -- feeds ---------------------------------------------------------------
    def _check(self, feeds) -> int:
        if not isinstance(feeds, dict):
            raise ValueError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
        if feeds.keys() != self._input_names:
            missing = sorted(set(self.inputs) - set(feeds))
            extra = sorted(set(feeds) - set(self.inputs))
            if missing:
                raise ValueError(f"missing feed for input {missing[0]!r} (the model's inputs: {sorted(self.inputs)})")
            raise ValueError(f"unknown input {extra[0]!r} (the model's inputs: {sorted(self.inputs)})")
        batch = None
        for name, dtype, spec, trailing in self._specs:
            a = feeds[name]
            shape = getattr(a, "shape", None)
            if trailing is None or getattr(a, "dtype", None) != dtype or not shape or shape[1:] != trailing:
                _check_feed(name, spec, a, dtype)      # raises naming the feed and what is wrong
            if spec["padded"]:
                if batch is not None and feeds[name].shape[0] != batch[1]:
                    raise ValueError(f"input {name!r} has batch {feeds[name].shape[0]} but input {batch[0]!r} "
                                     f"has {batch[1]}")
                batch = (name, feeds[name].shape[0])
        if batch is None:
            src = self.meta["batch_source"]
            shape_feed = feeds[src["input"]]
            if not isinstance(shape_feed, np.ndarray) and hasattr(shape_feed, "get"):
                shape_feed = shape_feed.get()          # a dense_shape on the GPU: one small read back
            batch = (src["input"], int(np.asarray(shape_feed).reshape(-1)[0]))
        if batch[1] < 1:
            raise ValueError(f"input {batch[0]!r}: batch must be at least 1, got {batch[1]}")
        if batch[1] > self.buckets[-1]:
            raise ValueError(f"input {batch[0]!r}: batch {batch[1]} is above the largest bucket "
                             f"{self.buckets[-1]} this bundle was exported for (export with --batch ...,"
                             f"{batch[1]} or larger, or split the request)")
        self._check_pieces(feeds, batch[1])
        return batch[1]

    def _check_pieces(self, feeds, batch: int) -> None:
        """SparseTensor pieces: equal lengths per slot (the padding would hide
        a mismatch from the engine), and no negative ids where a plain
        lookup is served in safe mode (which would prune them)."""
        for op, s, slot in self._piece_slots:
            ids = slot["ids"]
            n = feeds[ids["input"]].shape[0]
            for part in ("segment_ids", "weights"):
                src = slot[part]
                if src is not None and feeds[src["input"]].shape[0] != n:
                    raise SlotError(f"{_where(op, s)}: {part} has {feeds[src['input']].shape[0]} entries but "
                                    f"ids has {n}")
            seg = slot["segment_ids"]
            if seg is not None and isinstance(feeds[seg["input"]], np.ndarray) and n:
                g = feeds[seg["input"]]
                top = int((g[:, seg.get("column", 0)] if g.ndim == 2 else g).max())
                if top >= batch:
                    raise SlotError(f"{_where(op, s)}: segment ids reach row {top}, beyond the batch of "
                                    f"{batch} rows")
            x = feeds[ids["input"]]
            if slot["serve_mode"] != slot["mode"] and isinstance(x, np.ndarray) and x.size and x.min() < 0:
                k = int(np.argmax(x < 0))
                raise SlotError(f"{_where(op, s)}: id {int(x[k])} at position {k} is out of range "
                                f"[0, {slot['rows']})")

    def _pad(self, feeds, batch: int, bucket: int, xp) -> dict:
        """The feeds that need padding to ``bucket``, padded (the others are used as they are)."""
        out = {}
        if batch != bucket:
            for name in self._batch_inputs:
                a = feeds[name]
                out[name] = xp.concatenate([a, self._pad_block(name, a, xp)[:bucket - batch]])
        if self._piece_inputs:
            cap = bucket * self.meta["engine"]["max_nnz"]
            for name in self._piece_inputs:
                spec, a = self.inputs[name], feeds[name]
                if a.shape[0] > cap:
                    raise ValueError(f"input {name!r} has {a.shape[0]} entries, more than the {cap} a batch of "
                                     f"{bucket} holds (bucket x tiemb/max_nnz = {self.meta['engine']['max_nnz']}); "
                                     "export with a larger tiemb/max_nnz")
                out[name] = xp.concatenate([a, self._fill(spec, a, cap - a.shape[0], bucket, xp)])
        return out

    def _pad_block(self, name: str, a, xp):
        """Rows of ``name``'s pad value, as many as the largest bucket, on
        ``xp``'s device: made once, sliced per call."""
        key = (xp.__name__, name, tuple(a.shape[1:]))
        block = self._pad_blocks.get(key)
        if block is None:
            block = xp.full((self.buckets[-1],) + tuple(a.shape[1:]), self.inputs[name]["pad"], dtype=a.dtype)
            self._pad_blocks[key] = block
        return block

    def _fill(self, spec: dict, a, count: int, bucket: int, xp):
        """``count`` entries padding SparseTensor piece ``a``: segment ids in
        the spill rows after the bucket, max_nnz per row (sorted, within the
        engine's per-sample limit); ids -1 (pruned); weights 0."""
        if spec["fill"] != "spill":
            return xp.full((count,) + tuple(a.shape[1:]), spec["fill"], dtype=a.dtype)
        rows = bucket + xp.arange(count, dtype=a.dtype) // self.meta["engine"]["max_nnz"]
        if a.ndim == 1:
            return rows
        fill = xp.zeros((count,) + tuple(a.shape[1:]), dtype=a.dtype)
        fill[:, 0] = rows
        return fill

    def _prepare(self, feeds):
        """(batch, bucket, on_host, the program's inputs in order, padded).
        Host feeds stay numpy (padded on the host, moved in one transfer
        each); device feeds become cupy (padded on the device, handed over
        with DLPack)."""
        batch = self._check(feeds)
        bucket = self.buckets[bisect.bisect_left(self.buckets, batch)]
        on_host = all(isinstance(v, (np.ndarray, np.generic)) for v in feeds.values())
        if self.device_kind == "gpu" and not on_host:
            import cupy as xp

            feeds = {k: xp.asarray(v) if isinstance(v, (np.ndarray, np.generic)) or
                     hasattr(v, "__cuda_array_interface__") else xp.from_dlpack(v) for k, v in feeds.items()}
        else:
            xp = np
        padded = self._pad(feeds, batch, bucket, xp)
        return batch, bucket, on_host, [padded.get(n, feeds[n]) if padded else feeds[n] for n in self._program_inputs]

    def _handover(self, bucket: int, arrays: list, on_host: bool) -> list:
        """The program's inputs as device arrays: numpy through the bucket's
        transfer descriptors, device arrays with DLPack (no copy)."""
        if on_host:
            feeder = self._feeders[bucket]
            return [feeder.put(k, a if type(a) is np.ndarray else np.asarray(a)) for k, a in enumerate(arrays)]
        put = self._device_feeder.put
        return [put(a) for a in arrays]

    # -- calls ---------------------------------------------------------------
    def __call__(self, feeds):
        """Runs the model on ``feeds`` (see the class doc); raises ValueError
        naming the input or slot for bad feeds."""
        batch, bucket, on_host, arrays = self._prepare(feeds)
        args = self._handover(bucket, arrays, on_host)
        if self.command_buffer:
            self._check_latch(wait=False)     # a replayed graph ran no handler to report earlier errors
        try:
            results = self._programs[bucket].run_ready(args + self._weights)
            out = {}
            host = self.device_kind == "cpu" or on_host
            for (name, batched), r in zip(self._out_specs, results):
                # Cut on the numpy / cupy view: slicing a jax Array dispatches an XLA op per output.
                r = xla.to_host(r) if host else xla.to_cupy(r)
                out[name] = r[:batch] if batched and batch != bucket else r
        except Exception as e:         # XLA passes the handler's message on in its own exception type
            raise self._slot_error(e) from None
        if self.device_kind == "gpu" and on_host:
            self.synchronize()
        return out

    def _slot_error(self, e: Exception) -> Exception:
        """The custom call's "tiemb_lookup handle H: slot S: ..." with the slot's name and input."""
        m = re.search(r"tiemb_lookup handle (\d+): (.*)", str(e), re.S)
        if m is None or int(m.group(1)) not in self._handles:
            return e
        return SlotError(_rename(m.group(2).strip(), self._handles[int(m.group(1))]))

    def synchronize(self):
        """GPU: waits for the last call and raises the data errors its lookups found."""
        self._check_latch(wait=True)

    def _check_latch(self, wait: bool) -> None:
        for plan, op in zip(self._plans, self.meta["ops"]):
            try:
                plan.check(wait)
            except ValueError as e:
                raise SlotError(_rename(str(e), op)) from None

    def floor_args(self, feeds):
        """(bucket, the dense module's arguments for ``feeds``): padded dense
        inputs and the lookup outputs (computed once here), as device arrays."""
        _, bucket, on_host, arrays = self._prepare(feeds)
        if bucket not in self._lookups_only:
            self._lookups_only[bucket] = self._compile(bucket, lookups_only=True)
        args = self._handover(bucket, arrays, on_host)
        looked = self._lookups_only[bucket].run_ready(args)
        position = {n: k for k, n in enumerate(self._program_inputs)}
        return bucket, [args[position[n]] for n in self.meta["dense"]["inputs"]] + \
            [looked[i] for i in self.meta["dense"]["lookups"]]

    def program_args(self, feeds):
        """(bucket, the compiled program's arguments for ``feeds``: padded
        inputs as device arrays, then the weights). With :meth:`run_program`,
        times the program alone, without the per-call checks and array
        handovers of ``model(feeds)`` (benchmarks)."""
        _, bucket, on_host, arrays = self._prepare(feeds)
        return bucket, self._handover(bucket, arrays, on_host) + self._weights

    def run_program(self, bucket: int, args: list):
        """The bucket's program (the lookups' custom call, then the dense
        module) on :meth:`program_args`: its results, not waited for."""
        return self._programs[bucket].run_ready(args)

    def dense_only(self, feeds_and_lookups: list, bucket: int):
        """The dense module of ``bucket`` alone on device arrays (the floor
        in benchmarks; arguments from :meth:`floor_args`): its results, not waited for."""
        if bucket not in self._dense:
            self._dense[bucket] = self._compile(bucket, dense_alone=True)
        return self._dense[bucket].run(list(feeds_and_lookups) + self._weights)

    def test_batches(self):
        """[(feeds, TensorFlow's outputs)] recorded at export."""
        return fmt.read_tests(self.dir)

    def __repr__(self):
        return (f"BundleModel({os.path.abspath(self.dir)!r}, device={self.device_kind!r}, buckets={self.buckets}, "
                f"level={self.meta['level']})")


def _check_feed(name: str, spec: dict, a, want: np.dtype) -> None:
    dtype = getattr(a, "dtype", None)
    if dtype is None or dtype != want:
        dtype = np.dtype(getattr(a, "dtype", type(a)))
        raise ValueError(f"input {name!r} must be {spec['dtype']}, got {dtype.name}")
    shape = tuple(a.shape)
    if len(shape) != len(spec["shape"]):
        raise ValueError(f"input {name!r} must have {len(spec['shape'])} dimensions "
                         f"(shape {spec['shape']}, -1 = any), got shape {shape}")
    for i, d in enumerate(spec["shape"]):
        if d >= 0 and (i > 0 or not spec["padded"]) and shape[i] != d:
            raise ValueError(f"input {name!r} must have shape {spec['shape']} (-1 = any), got {shape}")


def _where(op: dict, s: int) -> str:
    slot = op["slots"][s]
    return f"slot {slot['name']!r} (op {op['name']} slot {s}, input {slot['ids']['input']!r})"


def _rename(message: str, op: dict) -> str:
    """The engine's "slot i: ..." with the slot's name and input."""
    m = re.match(r"slot (\d+):(.*)", message, re.S)
    if m and int(m.group(1)) < len(op["slots"]):
        return f"{_where(op, int(m.group(1)))}:{m.group(2)}"
    return f"op {op['name']}: {message}"


def _plans(bundle_dir: str, meta: dict, device: str, ordinal: int) -> list:
    """One tiemb._C.XlaLookupPlan per lookup op: its slots on the engine of
    the bundle's store (tiers from the store's config on the GPU) and where
    each reads its operands and writes its output columns."""
    if not meta["ops"]:
        return []
    from .. import _C

    store = os.path.join(bundle_dir, fmt.STORE)
    for op in meta["ops"]:
        for slot in op["slots"]:
            if not os.path.isfile(os.path.join(store, slot["table"])):
                raise fmt.BundleError(f"{bundle_dir} is incomplete: missing {fmt.STORE}/{slot['table']}")
    e = _ENGINE_ENUMS
    plans = []
    for op in meta["ops"]:
        slots = op["slots"]
        try:
            plans.append(_C.XlaLookupPlan(
                device, store, ordinal, [s["table"] for s in slots], [e["combiner"][s["combiner"]] for s in slots],
                [e["mode"][s["serve_mode"]] for s in slots], [s["default_id"] for s in slots],
                [e["dtype"][s["out_dtype"]] for s in slots], [s["wrap_negative"] for s in slots],
                [s["dim"] for s in slots], [_wiring(op, s) for s in slots], [o["width"] for o in op["outputs"]]))
        except ValueError as err:
            raise fmt.BundleError(f"{bundle_dir}: op {op['name']} cannot be served: {err}") from None
    return plans


def _wiring(op: dict, slot: dict) -> list:
    """python/xla_ffi.cpp's slot_wiring: (ids operand, ids column, id width,
    segment ids operand, its column, weights operand, output, first column)."""
    arg = {n: k for k, n in enumerate(op["operands"])}
    ids, seg, w = slot["ids"], slot["segment_ids"], slot["weights"]
    column = slot["id_column"] if slot["id_column"] >= 0 else ids.get("column", -1) if ids["kind"] == "column" else -1
    dense_matrix = slot["id_width"] >= 0 or slot["mode"] == "gather"
    key = program.operand_key
    return [arg[key(ids)], column, slot["id_width"],
            -1 if seg is None or dense_matrix else arg[key(seg)],
            seg.get("column", -1) if seg is not None and seg["kind"] == "column" else -1,
            -1 if w is None else arg[key(w)], slot["output"], slot["offset"]]


class Baseline:
    """The original model's whole graph as exported with ``--baseline``
    (benchmarks: the original compiled by XLA on the same device).
    ``baseline(feeds)`` takes feeds whose batch is exactly a bucket."""

    def __init__(self, bundle_dir: str, device: str = "gpu", ordinal: int = 0):
        meta = fmt.read_meta(bundle_dir)
        base = meta.get("baseline") or {}
        if "modules" not in base:
            raise ValueError(f"{bundle_dir} has no baseline: {base.get('reason', 'exported without --baseline')}")
        self._dev = xla.device(device, ordinal)
        self.inputs = base["inputs"]
        self.outputs = [o["name"] for o in meta["outputs"]]
        weights = fmt.read_npz(bundle_dir, fmt.BASELINE_WEIGHTS)
        self._weights = [xla.put(weights[w], self._dev) for w in base["weights"]]
        self._modules = {int(b): xla.Executable(fmt.read_module(bundle_dir, m), self._dev)
                         for b, m in base["modules"].items()}
        # The same handover as BundleModel's, so that the two calls compare like with like.
        max_nnz = meta["engine"]["max_nnz"]
        self._feeders = {b: xla.HostFeeder([(program.input_shape(meta["inputs"][n], b, max_nnz),
                                             meta["inputs"][n]["dtype"]) for n in self.inputs], self._dev)
                         for b in self._modules}
        self._device_feeder = xla.DeviceFeeder(self._dev)

    def __call__(self, feeds) -> list:
        return self.run(*self.args(feeds))

    def args(self, feeds):
        """(batch, the compiled module's arguments for ``feeds`` as device arrays)."""
        batch = int(feeds[self.inputs[0]].shape[0])
        if batch not in self._modules:
            raise ValueError(f"the baseline is compiled for batches {sorted(self._modules)}, got {batch}")
        arrays = [feeds[n] for n in self.inputs]
        if all(type(a) is np.ndarray for a in arrays):
            feeder = self._feeders[batch]
            return batch, [feeder.put(k, a) for k, a in enumerate(arrays)] + self._weights
        return batch, [self._device_feeder.put(a) for a in arrays] + self._weights

    def run(self, batch: int, args: list) -> list:
        """The module of ``batch`` on :meth:`args`: its results, not waited for."""
        return self._modules[batch].run_ready(args)
