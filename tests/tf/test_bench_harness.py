"""The model harness (`tiemb bench`) at small scale: the table and the JSON
are right (fields, speedup = baseline / optimized, outputs equal within the
level's tolerance), not its speed."""

import json
import os
import subprocess
import sys

import pytest

tf = pytest.importorskip("tensorflow")

from tiemb import backends, tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tiemb", *args], capture_output=True, text=True, cwd="/",
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_every_model_through_the_harness(tmp_path):
    out = str(tmp_path / "bench.json")
    proc = run_cli("bench", "--model", "all", "--scale", "tiny", "--small-models", "--batch", "8,64", "--level", "0,1",
                   "--runs", "3", "--json", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, *rest = proc.stdout.splitlines()
    assert "machine:" in header and "cores" in header and "TensorFlow" in header
    table = [ln for ln in rest if ln.startswith("| ") and not ln.startswith("| model") and "---" not in ln]
    assert len(table) == 12, proc.stdout
    with open(out) as f:
        result = json.load(f)
    rows = result["rows"]
    assert {(r["model"], r["batch"], r["level"]) for r in rows} == {
        (m, b, lv) for m in ("wd", "deepfm", "dlrm") for b in (8, 64) for lv in (0, 1)}
    fused = {"wd": 52, "deepfm": 54, "dlrm": 26}
    for r in rows:
        assert r["lookups_found"] == r["lookups_fused"] == fused[r["model"]], r
        for part in ("whole_original", "whole_optimized", "embedding_original", "embedding_fused", "floor"):
            t = r[part]
            assert 0 < t["min_ms"] <= t["median_ms"] <= t["max_ms"], (part, t)
        assert r["speedup"] == pytest.approx(r["whole_original"]["median_ms"] / r["whole_optimized"]["median_ms"])
        assert r["embedding_speedup"] == pytest.approx(r["embedding_original"]["median_ms"] /
                                                       r["embedding_fused"]["median_ms"])
        assert r["qps_optimized"] == pytest.approx(r["batch"] * 1e3 / r["whole_optimized"]["median_ms"])
        assert r["max_rel_diff"] <= backends.TOLERANCE[r["level"]], r
        assert r["dense_backend"] in ("xla", "tensorflow", "tensorflow-fp32")
    # Each printed row carries the JSON's speedup.
    for line, r in zip(table, rows):
        assert f"| {r['model']} | {r['batch']} | {r['level']} |" in line and f"{r['speedup']:.2f}x" in line
        # The cache column: the advisor's simulated GPU hit rate on this traffic (issue 15).
        assert 0.0 < r["simulated_hit_rate"] <= 1.0, r
        assert f"{r['simulated_hit_rate']:.1%} simulated GPU" in line


def test_harness_errors():
    proc = run_cli("bench", "--device", "gpu")
    assert proc.returncode == 1 and "--device gpu: TensorFlow sees no GPU here" in proc.stderr
    proc = run_cli("bench", "--level", "2")
    assert proc.returncode == 2 and "levels are 0 and/or 1" in proc.stderr
    proc = run_cli("bench", "--model", "bert")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
