"""tiemb: fused, cache-tiered embedding lookups for TensorFlow recommender models.

``import tiemb`` needs only numpy; TensorFlow is imported lazily by the parts
that work on graphs.
"""

from ._version import __version__

try:
    from . import _C
except ImportError as e:  # pragma: no cover - depends on how tiemb was installed
    import os as _os

    raise ImportError(
        f"tiemb's compiled core (tiemb._C) could not be imported from {_os.path.dirname(__file__)}: {e}. "
        "If that is the source tree, build it first (pip install -e .) or run from outside it "
        "(plain `pytest`, not `python -m pytest`, which puts the source tree first on sys.path)."
    ) from e
from .config import ConfigError, OptimizeConfig
from .engine import EmbeddingEngine, EngineConfig, LookupGroup, Slot
from .gpu import GpuEmbeddingEngine, GpuLookupGroup, TierConfig
from .optimizer import OptimizeError, inspect, optimize
from .report import OptimizedReport
from .settings import Settings
from .shapes import InputShape, ShapeSpecError, parse_input_shapes


if "tensorflow" in __import__("sys").modules:
    # Serving code imports TensorFlow first: register TiembLookup so optimized
    # models load. Without TensorFlow, `import tiemb` stays TensorFlow-free.
    from . import tf_ops as _tf_ops

    if _tf_ops.available():
        _tf_ops.load()


def build_info() -> dict:
    """What this build contains: version, CUDA part and architectures, TF op library."""
    return dict(_C.build_info())


def cuda_available() -> bool:
    """True when the CUDA part was compiled and a GPU is visible."""
    return _C.cuda_compiled() and _C.cuda_device_count() > 0


__all__ = ["EmbeddingEngine", "EngineConfig", "LookupGroup", "Slot", "GpuEmbeddingEngine", "GpuLookupGroup",
           "TierConfig", "build_info", "cuda_available", "optimize", "inspect", "OptimizeConfig", "OptimizedReport",
           "OptimizeError", "ConfigError", "parse_input_shapes", "InputShape", "ShapeSpecError", "__version__",
           "Settings"]
