"""Data errors of lookups captured in a CUDA graph. A replayed graph runs no
host code (no event is recorded for it), so what reports its errors is the
latch's host mirror, which the kernels write themselves: the group's check
reads it after a captured launch (at synchronize, and before the next
launch). The bundle's command-buffer handler relies on this."""

import numpy as np
import pytest

import tiemb

pytestmark = pytest.mark.gpu


def test_bad_id_in_a_replayed_graph_is_reported():
    cp = pytest.importorskip("cupy")
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    gpu = tiemb.GpuEmbeddingEngine(8, 1, 1)
    t = gpu.add_table(table)
    g = gpu.group([tiemb.Slot(t, mode="gather")])
    ids = cp.asarray(np.array([1, 2, 3], np.int64))
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        prep = g.prepare([ids], stream=stream)
        stream.begin_capture()
        prep.run()
        graph = stream.end_capture()
        graph.launch(stream)
        g.synchronize()                                   # no error
        np.testing.assert_array_equal(cp.asnumpy(prep.outputs[0]), table[[1, 2, 3]])
        ids[1] = 12                                       # refilled in place: the replay reads it
        graph.launch(stream)
        with pytest.raises(ValueError, match=r"slot 0: ids\[1\] = 12 is out of range \[0, 10\) of table 0"):
            g.synchronize()
        ids[1] = 2
        graph.launch(stream)
        g.synchronize()                                   # reported once, then cleared
        np.testing.assert_array_equal(cp.asnumpy(prep.outputs[0]), table[[1, 2, 3]])
        ids[2] = -1
        graph.launch(stream)
        stream.synchronize()
        with pytest.raises(ValueError, match=r"slot 0: ids\[2\] = -1 is out of range"):
            prep.run()                                    # the next launch reports the replay's error
        ids[2] = 3
        prep.run()
        g.synchronize()
    np.testing.assert_array_equal(cp.asnumpy(prep.outputs[0]), table[[1, 2, 3]])
