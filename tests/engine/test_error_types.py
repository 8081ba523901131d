"""Two error types cross the binding (issue 12, item 4): bad input is a
ValueError naming what is wrong; a failure of the device (out of memory, a
failed launch) is a RuntimeError, never caught by `except ValueError`."""

import numpy as np
import pytest

import tiemb
from tiemb import _C


def test_device_errors_reach_python_as_runtime_error_not_value_error():
    with pytest.raises(RuntimeError, match=r"cudaMalloc\(x\) failed: cudaErrorMemoryAllocation") as info:
        _C._raise_device_error("cudaMalloc(x) failed: cudaErrorMemoryAllocation", True)
    assert not isinstance(info.value, ValueError)
    assert isinstance(info.value, _C.TiembDeviceError)
    with pytest.raises(RuntimeError, match="launch failed"):
        _C._raise_device_error("launch failed", False)


def test_bad_input_stays_value_error():
    e = tiemb.EmbeddingEngine(4, 1, 2)
    g = e.group([tiemb.Slot(e.add_table(np.ones((3, 2), np.float32)), "sum")])
    with pytest.raises(ValueError, match=r"slot 0: ids\[0\] = 7 is out of range") as info:
        g.lookup([np.array([7])], segment_ids=[np.array([0])])
    assert not isinstance(info.value, RuntimeError)
    assert isinstance(info.value, _C.TiembError) and not isinstance(info.value, _C.TiembDeviceError)
