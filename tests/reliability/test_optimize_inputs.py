"""optimize()'s input_shapes mistakes are one-line errors naming the input;
generated test data is bounded (issue 11)."""

import os
import subprocess
import sys

import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from rel_models import lookup_model, sparse_input_model  # noqa: E402
from tiemb import tf_ops  # noqa: E402
from tiemb.optimizer import MAX_GENERATED_BYTES, OptimizeError  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


def test_wrong_width_and_order_name_the_input(tmp_path):
    src = lookup_model(str(tmp_path / "a"), 1)
    with pytest.raises(OptimizeError, match=r"gives ids the shape 16\*5, but the model's input ids has shape "
                                            r"\(None, 4\)"):
        tiemb.optimize(src, 0, 1, ["16*5"], save_path=str(tmp_path / "o"))
    sp = sparse_input_model(str(tmp_path / "s"), 1)
    # Positional entries follow the sorted input names (dense_shape, indices, values): this order is wrong.
    with pytest.raises(OptimizeError, match=r"gives dense_shape the shape 8\*2.*order \['dense_shape', 'indices', "
                                            r"'values'\]"):
        tiemb.optimize(sp, 0, 1, ["8*2", "8", "2"], save_path=str(tmp_path / "o"))
    run = subprocess.run([sys.executable, "-m", "tiemb", "optimize", src, "--save", str(tmp_path / "o"),
                          "--input-shapes", "16*5"], capture_output=True, text=True, cwd="/",
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [line for line in run.stderr.splitlines() if line.startswith("tiemb optimize: error")]
    assert run.returncode == 1 and len(lines) == 1 and "ids" in lines[0], run.stderr[-2000:]
    assert "Graph execution error" not in run.stderr


def test_generated_test_data_is_bounded(tmp_path):
    src = lookup_model(str(tmp_path / "a"), 1)
    with pytest.raises(OptimizeError, match=rf"GB of generated test data, more than the {MAX_GENERATED_BYTES >> 20} MB"):
        tiemb.optimize(src, 0, 1, ["100000000*4"], save_path=str(tmp_path / "o"))
    assert not os.path.exists(str(tmp_path / "o"))
