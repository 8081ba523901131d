"""The one module that talks to jax: StableHLO text compiled by XLA through
PJRT, and arrays moved in and out with DLPack.

jax has no public "compile this StableHLO text" call; this uses the PJRT
client jax itself compiles with (``jax.extend.backend.get_backend``, public)
and its ``compile_and_load``/``execute_sharded`` (what ``jax.jit`` calls
underneath), so a change in jax touches only this file.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np

_PLATFORM = {"cpu": "cpu", "gpu": "cuda"}


def _jax():
    try:
        import jax
    except ImportError:
        raise RuntimeError("serving a bundle needs jax: pip install jax (CPU), or tiemb[gpu] on a GPU host "
                           "(jax with CUDA and cupy)") from None
    return jax


def device(kind: str, ordinal: int = 0):
    """The jax device of ``kind`` ("cpu" or "gpu")."""
    from jax.extend import backend

    _jax()
    try:
        client = backend.get_backend(_PLATFORM[kind])
    except RuntimeError as e:
        raise RuntimeError(f"jax has no {kind} backend here ({e}); on a GPU host install tiemb[gpu]") from None
    return client.local_devices()[ordinal]


class Executable:
    """One compiled module on one device; ``run(args)`` returns its results
    as device arrays (jax Arrays) without waiting for them."""

    def __init__(self, text: str, dev):
        from jax.extend import backend

        self.device = dev
        client = dev.client
        options = backend.get_compile_options(num_replicas=1, num_partitions=1)
        try:
            self._exe = client.compile_and_load(text, [dev], options)
        except TypeError:      # other jaxlib versions: devices as a DeviceList, the module as bytecode
            from jax._src.lib import xla_client

            devices = xla_client.DeviceList((dev,))
            try:
                self._exe = client.compile_and_load(text, devices, options)
            except TypeError:
                from jax._src.interpreters import mlir
                from jax.extend.mlir import ir

                with mlir.make_ir_context():
                    module = mlir.module_to_bytecode(ir.Module.parse(text))
                self._exe = client.compile_and_load(module, devices, options)

    def run(self, args: Sequence) -> List:
        """``args``: jax Arrays on this device (others are put there first)."""
        return self.run_ready([put(a, self.device) for a in args])

    def run_ready(self, args: Sequence) -> List:
        """``args``: jax Arrays already on this device, in order (the call path:
        no per-argument type check or conversion)."""
        results = self._exe.execute_sharded(args)
        return [r[0] for r in results.disassemble_into_single_device_arrays()]

    def hlo_text(self) -> str:
        """The optimized HLO XLA compiled (to check precision, fusions)."""
        return self._exe.hlo_modules()[0].to_string() if hasattr(self._exe, "hlo_modules") else ""


def _x64(jax):
    """jax narrows 64-bit arrays to 32 bits unless x64 is on; TensorFlow's
    modules take int64 ids: switch it on for our transfers only, never for
    the caller's jax code."""
    scope = getattr(jax, "enable_x64", None)
    if scope is None:
        from jax.experimental import enable_x64 as scope
    return scope(True)


def compiled_dots(hlo: str):
    """(dot or GEMM lines of compiled HLO, those not at HIGHEST precision):
    on a GPU the dots become cuBLAS custom calls whose backend config keeps
    the operand precision; anything but HIGHEST there may run in TF32."""
    lines = [ln.strip() for ln in hlo.splitlines()
             if " dot(" in ln or "cublas" in ln.lower() or "gemm" in ln.lower() or "matmul" in ln.lower()]
    # A GEMM fusion's call line carries no precision (its dot inside does): only lines that state one count.
    return lines, [ln[:240] for ln in lines
                   if (" dot(" in ln or "precision" in ln.lower()) and "highest" not in ln.lower()]


def put(array, dev):
    """``array`` on ``dev`` as a jax Array: numpy is copied there once; a
    device array (cupy, ``__dlpack__``) on the same GPU is taken over with
    DLPack, without a copy."""
    jax = _jax()
    if isinstance(array, jax.Array):
        return array
    with _x64(jax):
        if isinstance(array, np.ndarray) or np.isscalar(array):
            return jax.device_put(array, dev)
        if hasattr(array, "__dlpack__"):
            return jax.dlpack.from_dlpack(array)
    raise ValueError(f"cannot hand a {type(array).__name__} to XLA: give numpy, cupy or a DLPack array")


def put_all(arrays, dev) -> list:
    """:func:`put` of each array, in one x64 scope (entering it costs more
    than handing over an array that is already on the device)."""
    jax = _jax()
    with _x64(jax):
        return [put(a, dev) for a in arrays]


class HostFeeder:
    """Hands numpy arrays of known shapes and dtypes to one device.

    ``jax.device_put`` works out per call what never changes for a compiled
    program's inputs (the abstract value, the sharding, dtype narrowing
    under x64, the x64 scope itself: ~30 us per array); here they are
    computed once per (shape, dtype) and each call is jax's own batched
    transfer (what ``device_put`` ends in). Where this jax has no such entry
    point (checked once, on a probe array), :meth:`put` is :func:`put`.

    Args:
        specs: [(shape, dtype)] of the arrays, by position.
        dev: the jax device.
    """

    def __init__(self, specs: Sequence, dev):
        self.device = dev
        self._fast = None
        try:
            from jax._src import core
            from jax._src.lib import xla_client
            from jax.sharding import SingleDeviceSharding

            sharding = SingleDeviceSharding(dev)
            avals = [core.ShapedArray(tuple(int(d) for d in shape), np.dtype(dtype)) for shape, dtype in specs]

            def fast(k, array, _put=xla_client.batched_device_put, _devs=[dev]):
                return _put(avals[k], sharding, [array], _devs, True, enable_x64=True)

            for k, (shape, dtype) in enumerate(specs):   # every spec: int64 must stay int64
                probe = fast(k, np.zeros(shape, dtype))
                if probe.dtype != np.dtype(dtype) or tuple(probe.shape) != tuple(shape):
                    raise TypeError(f"probe came back {probe.dtype}{tuple(probe.shape)}")
            self._fast = fast
        except Exception:      # another jax: its internals differ; the public path still works
            self._fast = None

    def put(self, k: int, array: np.ndarray):
        """Array ``k`` (a C-contiguous numpy array of spec ``k``) on the device."""
        if self._fast is not None:
            return self._fast(k, array)
        return put_all([array], self.device)[0]


class DeviceFeeder:
    """Takes device arrays (cupy, anything with ``__dlpack__``) over as jax
    Arrays on one device, without a copy.

    ``jax.dlpack.from_dlpack`` looks up the backend and the device, checks
    the copy flags and runs ``jnp.asarray`` on the result per call (~50 us on
    a loaded CPU); the device is fixed here, so each call is the exporter's
    ``__dlpack__`` on the stream jax waits on (the producer's pending work
    ordered before XLA's) and jax's own DLPack import. Arrays on another
    device or of another kind, and any jax whose internals differ (checked
    once, on a probe), take :func:`put`.
    """

    _DL_TYPES = {"cpu": 1, "gpu": 2}      # DLPack's kDLCPU, kDLCUDA

    def __init__(self, dev):
        jax = _jax()
        self.device = dev
        self._array_type = jax.Array
        self._dl_type = self._DL_TYPES["cpu" if dev.platform == "cpu" else "gpu"]
        self._hardware_id = getattr(dev, "local_hardware_id", None)
        self._import, self._extra = None, ()
        try:
            from jax._src.lib import _jax as jaxlib_ext

            to_buffer = jaxlib_ext.dlpack_managed_tensor_to_buffer
            want = np.arange(6, dtype=np.int64).reshape(2, 3)
            with _x64(jax):
                probe = jax.device_put(want, dev)
            for extra in ((None, self._dl_type), ()):      # newer jaxlibs also take (copy, device type)
                try:
                    got = to_buffer(probe.__dlpack__(stream=self._stream()), dev, self._stream(), *extra)
                except TypeError:
                    continue
                if got.dtype == np.int64 and np.array_equal(np.asarray(got), want):
                    self._import, self._extra = to_buffer, extra
                break
        except Exception:      # another jax: its internals differ; the public path still works
            self._import = None

    def _stream(self):
        """The stream jax's own from_dlpack hands the exporter (None on the CPU)."""
        if self._dl_type == self._DL_TYPES["cpu"]:
            return None
        return self.device.get_stream_for_external_ready_events()

    def put(self, array):
        """``array`` as a jax Array on the device (a jax Array is returned as is)."""
        if isinstance(array, self._array_type):
            return array
        if self._import is not None and hasattr(array, "__dlpack_device__"):
            dl_type, dl_id = array.__dlpack_device__()
            if int(dl_type) == self._dl_type and (self._hardware_id is None or dl_id == self._hardware_id):
                stream = self._stream()
                return self._import(array.__dlpack__(stream=stream), self.device, stream, *self._extra)
        return put_all([array], self.device)[0]


def to_host(array) -> np.ndarray:
    """A numpy copy (waits for the device)."""
    return np.asarray(array)


def to_cupy(array):
    """A cupy view of a jax GPU Array (DLPack, no copy)."""
    import cupy

    return cupy.from_dlpack(array)


def block(arrays) -> None:
    for a in arrays:
        a.block_until_ready()


# -- the lookups' custom call -------------------------------------------------
LOOKUP_TARGET = "tiemb_lookup"
# The GPU handler declared command-buffer compatible (python/xla_ffi.cpp): a
# target of its own, so that a process can serve bundles both ways.
LOOKUP_TARGET_CMDBUF = "tiemb_lookup_cmdbuf"
_FFI_PLATFORM = {"cpu": "cpu", "gpu": "CUDA"}
_registered = set()


def register_lookup_target(kind: str, command_buffer: bool = False) -> None:
    """Registers tiemb._C's XLA FFI lookup handler for ``kind`` ("cpu" or
    "gpu") with jax's XLA, once per process. ``command_buffer``: the GPU
    handler XLA may trace into a program's CUDA graph, as target
    :data:`LOOKUP_TARGET_CMDBUF`. Raises RuntimeError saying how to build
    the handlers when this tiemb has none (built without jaxlib's FFI
    headers) or none for ``kind`` (a GPU handler needs the CUDA part);
    ValueError for ``command_buffer`` on the CPU."""
    if command_buffer and kind != "gpu":
        raise ValueError(f"command_buffer=True needs kind 'gpu', got {kind!r}")
    key = "gpu_command_buffer" if command_buffer else kind
    if key in _registered:
        return
    jax = _jax()
    from .. import _C

    if not hasattr(_C, "xla_ffi_targets"):
        raise RuntimeError("this tiemb was built without its XLA FFI lookup handlers, which serving a bundle needs: "
                           "rebuild it where jax is installed (pip install jax, then pip install . ; on a host "
                           "without network: pip install --no-build-isolation --no-deps .; TIEMB_XLA_FFI=ON makes "
                           "a build without them fail)")
    targets = _C.xla_ffi_targets()
    if key not in targets:
        raise RuntimeError(f"this tiemb has no {key} XLA FFI lookup handler (built without the CUDA part: build it "
                           "on the GPU host with TIEMB_CUDA=ON)")
    jax.ffi.register_ffi_target(LOOKUP_TARGET_CMDBUF if command_buffer else LOOKUP_TARGET, targets[key],
                                platform=_FFI_PLATFORM[kind], api_version=1)
    _registered.add(key)


def rename_main(text: str, name: str):
    """``text`` (a StableHLO module) with its ``main`` renamed to private
    ``name``, printed without locations; and main's argument and result
    types as MLIR type strings. Raises ValueError when it does not parse or
    has no main."""
    _jax()
    from jax._src.interpreters import mlir
    from jax.extend.mlir import ir

    with mlir.make_ir_context():
        try:
            module = ir.Module.parse(text)
        except Exception as e:      # MLIR's parse errors come as several types
            raise ValueError(str(e).splitlines()[0][:300]) from None
        for op in module.body.operations:
            if op.operation.name == "func.func" and ir.StringAttr(op.attributes["sym_name"]).value == "main":
                ftype = ir.FunctionType(ir.TypeAttr(op.attributes["function_type"]).value)
                op.attributes["sym_name"] = ir.StringAttr.get(name)
                op.attributes["sym_visibility"] = ir.StringAttr.get("private")
                return (module.operation.get_asm(enable_debug_info=False), [str(t) for t in ftype.inputs],
                        [str(t) for t in ftype.results])
    raise ValueError("the module has no function main")
