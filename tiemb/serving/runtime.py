"""A loaded bundle: feeds checked and padded to a bucket, lookups on tiemb's
engine, the dense part compiled by XLA, the padding cut off."""

from __future__ import annotations

import bisect
import os
from typing import Dict

import numpy as np

from . import format as fmt
from . import xla

DEVICES = ("cpu", "gpu")


class BundleModel:
    """``model(feeds)`` -> {output name: array}.

    Built by :func:`tiemb.serving.load`. Feeds are a dict of arrays, one per
    model input (the SavedModel signature's names). On the CPU: numpy in,
    numpy out. On the GPU: numpy in gives numpy out (copied back at the end);
    device arrays in (cupy, ``__cuda_array_interface__``, DLPack) give cupy
    arrays out without waiting for the GPU; data errors the GPU finds (an id
    out of range) are raised by :meth:`synchronize` or the next call.

    Attributes:
        buckets: the batch sizes compiled; a request is padded to the next one.
        inputs, outputs: the bundle's input and output descriptions.
        meta: everything bundle.json holds.
    """

    def __init__(self, bundle_dir: str, device: str = "gpu", ordinal: int = 0):
        if device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
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
        self._modules = {}
        for b in self.buckets:
            try:
                self._modules[b] = xla.Executable(fmt.read_module(bundle_dir, fmt.dense_module(b)), self._dev)
            except fmt.BundleError:
                raise
            except Exception as e:    # XLA's parse / compile errors
                raise fmt.BundleError(f"{bundle_dir}/{fmt.dense_module(b)} does not compile: "
                                      f"{str(e).splitlines()[0][:300]}") from None
        if device == "cpu":
            from .lookups import CpuLookups

            self._lookups = CpuLookups(bundle_dir, meta) if meta["ops"] else None
        else:
            from .lookups import GpuLookups

            self._lookups = GpuLookups(bundle_dir, meta, ordinal) if meta["ops"] else None

    # -- feeds ---------------------------------------------------------------
    def _check(self, feeds) -> int:
        if not isinstance(feeds, dict):
            raise ValueError(f"feeds must be a dict of input name -> array, got {type(feeds).__name__}")
        missing = sorted(set(self.inputs) - set(feeds))
        extra = sorted(set(feeds) - set(self.inputs))
        if missing:
            raise ValueError(f"missing feed for input {missing[0]!r} (the model's inputs: {sorted(self.inputs)})")
        if extra:
            raise ValueError(f"unknown input {extra[0]!r} (the model's inputs: {sorted(self.inputs)})")
        batch = None
        for name, spec in self.inputs.items():
            a = feeds[name]
            dtype = np.dtype(getattr(a, "dtype", type(a)))
            if dtype != np.dtype(spec["dtype"]):
                raise ValueError(f"input {name!r} must be {spec['dtype']}, got {dtype.name}")
            shape = tuple(a.shape)
            if len(shape) != len(spec["shape"]):
                raise ValueError(f"input {name!r} must have {len(spec['shape'])} dimensions "
                                 f"(shape {spec['shape']}, -1 = any), got shape {shape}")
            fixed = [(i, d) for i, d in enumerate(spec["shape"]) if d >= 0 and (i > 0 or not spec["padded"])]
            for i, d in fixed:
                if shape[i] != d:
                    raise ValueError(f"input {name!r} must have shape {spec['shape']} (-1 = any), got {shape}")
            if spec["padded"]:
                if batch is not None and shape[0] != batch[1]:
                    raise ValueError(f"input {name!r} has batch {shape[0]} but input {batch[0]!r} has {batch[1]}")
                batch = (name, shape[0])
        if batch is None:
            src = self.meta["batch_source"]
            shape_feed = feeds[src["input"]]
            if not isinstance(shape_feed, np.ndarray) and hasattr(shape_feed, "get"):
                shape_feed = shape_feed.get()          # a dense_shape on the GPU: one small read back
            n = int(np.asarray(shape_feed).reshape(-1)[0])
            batch = (src["input"], n)
        if batch[1] < 1:
            raise ValueError(f"input {batch[0]!r}: batch must be at least 1, got {batch[1]}")
        if batch[1] > self.buckets[-1]:
            raise ValueError(f"input {batch[0]!r}: batch {batch[1]} is above the largest bucket "
                             f"{self.buckets[-1]} this bundle was exported for (export with --batch ...,"
                             f"{batch[1]} or larger, or split the request)")
        return batch[1]

    def _pad(self, feeds, batch: int, bucket: int, xp):
        if batch == bucket:
            return feeds
        out = dict(feeds)
        for name, spec in self.inputs.items():
            if spec["padded"]:
                a = feeds[name]
                fill = xp.full((bucket - batch,) + tuple(a.shape[1:]), spec["pad"], dtype=a.dtype)
                out[name] = xp.concatenate([a, fill])
        return out

    # -- calls ---------------------------------------------------------------
    def __call__(self, feeds):
        """Runs the model on ``feeds`` (see the class doc); raises ValueError
        naming the input or slot for bad feeds."""
        batch = self._check(feeds)
        bucket = self.buckets[bisect.bisect_left(self.buckets, batch)]
        on_host = all(isinstance(v, (np.ndarray, np.generic)) for v in feeds.values())
        if self.device_kind == "gpu":
            import cupy as xp

            feeds = {k: xp.asarray(v) if isinstance(v, (np.ndarray, np.generic)) else xp.from_dlpack(v)
                     if not hasattr(v, "__cuda_array_interface__") else xp.asarray(v) for k, v in feeds.items()}
        else:
            xp = np
        padded = self._pad(feeds, batch, bucket, xp)
        looked_up = self._lookups(padded, bucket) if self._lookups else []
        args = [xla.put(padded[name], self._dev) for name in self.meta["dense"]["inputs"]]
        args += [xla.put(looked_up[i], self._dev) for i in self.meta["dense"]["lookups"]]
        results = self._modules[bucket].run(args + self._weights)
        out = {}
        for spec, r in zip(self.outputs, results):
            if spec["batched"]:
                r = r[:batch]
            if self.device_kind == "cpu" or on_host:
                out[spec["name"]] = xla.to_host(r)
            else:
                out[spec["name"]] = xla.to_cupy(r)
        if self.device_kind == "gpu" and on_host and self._lookups is not None:
            self._lookups.check()
        return out

    def dense_only(self, feeds_and_lookups: list, bucket: int):
        """The dense module of ``bucket`` alone on device arrays (the floor
        in benchmarks): its results, not waited for."""
        return self._modules[bucket].run(list(feeds_and_lookups) + self._weights)

    def synchronize(self):
        """GPU: waits for the last call and raises the data errors its lookups found."""
        if self.device_kind == "gpu" and self._lookups is not None:
            self._lookups.check()

    def test_batches(self):
        """[(feeds, TensorFlow's outputs)] recorded at export."""
        return fmt.read_tests(self.dir)

    def __repr__(self):
        return (f"BundleModel({os.path.abspath(self.dir)!r}, device={self.device_kind!r}, buckets={self.buckets}, "
                f"level={self.meta['level']})")


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

    def __call__(self, feeds) -> list:
        batch = int(feeds[self.inputs[0]].shape[0])
        if batch not in self._modules:
            raise ValueError(f"the baseline is compiled for batches {sorted(self._modules)}, got {batch}")
        return self._modules[batch].run([xla.put(feeds[n], self._dev) for n in self.inputs] + self._weights)
