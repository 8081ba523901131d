"""``OptimizedReport``: seed 000's report fields, and ours.

Seed fields: ``software_environment`` (list of {software, version}),
``hardware_environment`` ({device_type, microarchitecture}),
``test_data_info`` ({test_data_source, test_data_shape, test_data_type}),
``optimization_result`` ({baseline_time, optimized_time, baseline_qps,
optimized_qps, speedup} as the seed's strings). Ours: ``timing`` (the numbers
behind them: medians, min, max, runs), ``accuracy``, ``rewrite`` (lookups
found, replaced, left alone with reasons), ``dense_backend``, ``cache``,
``config``, ``notes``. ``str(report)`` is the seed's JSON; ``save(path)``
writes it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, List

from ._version import __version__


@dataclass
class OptimizedReport:
    software_environment: List[Dict[str, str]] = field(default_factory=list)
    hardware_environment: Dict[str, str] = field(default_factory=dict)
    test_data_info: Dict[str, str] = field(default_factory=dict)
    optimization_result: Dict[str, str] = field(default_factory=dict)
    timing: Dict[str, object] = field(default_factory=dict)
    accuracy: Dict[str, object] = field(default_factory=dict)
    rewrite: Dict[str, object] = field(default_factory=dict)
    dense_backend: Dict[str, object] = field(default_factory=dict)
    cache: Dict[str, object] = field(default_factory=dict)
    config: Dict[str, object] = field(default_factory=dict)
    notes: List[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def save(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(self) + "\n")
        os.replace(tmp, path)


def software_environment() -> List[Dict[str, str]]:
    """tensorflow, CUDA, cuDNN (as TensorFlow was built), TensorRT where
    TensorFlow has it, tiemb (and whether its CUDA part was compiled)."""
    import tensorflow as tf

    from . import _C
    from .backends import tensorrt_status

    out = [{"software": "tensorflow", "version": tf.__version__}]
    info = tf.sysconfig.get_build_info()
    if info.get("is_cuda_build"):   # the versions TensorFlow was built against
        out.append({"software": "cuda", "version": str(info.get("cuda_version", "unknown"))})
        out.append({"software": "cuDNN", "version": str(info.get("cudnn_version", "unknown"))})
    trt_ok, _ = tensorrt_status()
    if trt_ok:
        out.append({"software": "TensorRT", "version": "linked"})
    out.append({"software": "tiemb", "version": __version__ + (" (CUDA part compiled)" if _C.cuda_compiled() else "")})
    return out


def hardware_environment(device: str) -> Dict[str, str]:
    """device_type and microarchitecture: the GPU's name, or the CPU model and cores."""
    if device == "gpu":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU") if gpus else "none"
        return {"device_type": "gpu", "microarchitecture": name}
    from .timing import machine_name

    return {"device_type": "cpu", "microarchitecture": machine_name()}


def optimization_result(baseline_ms: float, optimized_ms: float, batch: int) -> Dict[str, str]:
    """The seed's strings, all from the same two medians."""
    return {"baseline_time": f"{baseline_ms:.2f} ms", "optimized_time": f"{optimized_ms:.2f} ms",
            "baseline_qps": f"{batch * 1e3 / baseline_ms:.0f}", "optimized_qps": f"{batch * 1e3 / optimized_ms:.0f}",
            "speedup": f"{baseline_ms / optimized_ms:.2f}"}
