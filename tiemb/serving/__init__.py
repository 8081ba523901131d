"""Serving an optimized model without TensorFlow: the bundle.

``export_bundle`` (needs TensorFlow) writes a directory with the table store,
the dense part lowered by TensorFlow's XLA bridge to StableHLO (one module
per batch bucket, weights as arguments), the wiring of inputs to lookup
slots, and test batches with TensorFlow's outputs. ``load`` (needs jax, and
tiemb built with its XLA FFI handlers; on a GPU also cupy) serves it: one XLA
program per bucket, compiled through PJRT, whose lookups are a custom call
on tiemb's engine (program.py, python/xla_ffi.cpp) followed by the dense part.
"""

from __future__ import annotations

from .format import FORMAT_VERSION, BundleError


def export_bundle(model, bundle_dir, batch_sizes=None, level=0, optimization_config=None, test_data=None,
                  baseline=False, **kwargs):
    """See :func:`tiemb.serving.export.export_bundle` (every option is documented there)."""
    from .export import export_bundle as _export

    return _export(model, bundle_dir, batch_sizes=batch_sizes, level=level, optimization_config=optimization_config,
                   test_data=test_data, baseline=baseline, **kwargs)


def load(bundle_dir, device: str = "gpu", ordinal: int = 0, command_buffer: bool = False):
    """A bundle ready to serve: ``model(feeds) -> {output: array}``.

    Args:
        bundle_dir: a directory written by :func:`export_bundle` / ``tiemb export``.
        device: "gpu" (tiemb's GPU engine and XLA's CUDA backend) or "cpu"
            (tiemb's CPU engine and XLA's CPU backend).
        ordinal: which GPU.
        command_buffer: GPU only. True: the lookups' custom call is the
            handler declared command-buffer compatible, so XLA may keep the
            whole program in one CUDA graph (lookups included) instead of
            splitting it around the call; data errors are then reported by
            the runtime before the next call or when the caller waits. Needs
            every table GPU-resident and local (tiemb/cache_percentage 1, not
            distributed): otherwise ValueError naming the slot. Default False
            (the handler runs on every call, outside any graph).

    Raises BundleError for a missing, corrupt or other-version bundle.
    See :class:`tiemb.serving.runtime.BundleModel` for the call.
    """
    from .runtime import BundleModel

    return BundleModel(bundle_dir, device=device, ordinal=ordinal, command_buffer=command_buffer)


__all__ = ["export_bundle", "load", "BundleError", "FORMAT_VERSION"]
