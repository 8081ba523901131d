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
        # The formulas themselves: test_row_numbers_from_known_timings.
        assert r["max_rel_diff"] <= backends.TOLERANCE[r["level"]], r
        assert r["dense_backend"] in ("xla", "tensorflow", "tensorflow-fp32")
    # Each printed row carries the JSON's speedup.
    for line, r in zip(table, rows):
        assert f"| {r['model']} | {r['batch']} | {r['level']} |" in line and f"{r['speedup']:.2f}x" in line
        # The cache column: the advisor's simulated GPU hit rate on this traffic (issue 15).
        assert 0.0 < r["simulated_hit_rate"] <= 1.0, r
        assert f"{r['simulated_hit_rate']:.1%} simulated GPU" in line


def test_harness_errors():
    # Refused while parsing (exit 2), before TensorFlow is imported, on any machine.
    proc = run_cli("bench", "--device", "gpu")
    assert proc.returncode == 2 and "argument --device: gpu is not supported by `tiemb bench`" in proc.stderr
    proc = run_cli("bench", "--level", "2")
    assert proc.returncode == 2 and "levels are 0 and/or 1" in proc.stderr
    proc = run_cli("bench", "--model", "bert")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_row_numbers_from_known_timings():
    """Known timings in, the numbers worked out by hand out: 10 ms vs 4 ms at
    batch 512 is a 2.5x speedup, 51,200 vs 128,000 samples per second."""
    from tiemb.bench.model_bench import Row, Timing, format_table

    t = Timing.of([0.004, 0.012, 0.010])          # seconds: median 10 ms, min 4, max 12
    assert (t.median_ms, t.min_ms, t.max_ms) == pytest.approx((10.0, 4.0, 12.0))
    row = Row("wd", 512, 0, 26, 26, "xla", embedding_original=Timing(3.0, 2.0, 4.0),
              embedding_fused=Timing(0.5, 0.4, 0.6), whole_original=t, whole_optimized=Timing(4.0, 3.5, 5.0),
              floor=Timing(2.0, 1.9, 2.1), max_abs_diff=0.0, max_rel_diff=0.0, op_traced_ms=0.3, engine_ms=0.2,
              fused_outputs=1, simulated_hit_rate=0.875)
    d = row.as_dict()
    assert d["speedup"] == pytest.approx(2.5) and d["embedding_speedup"] == pytest.approx(6.0)
    assert d["qps_original"] == pytest.approx(51200.0) and d["qps_optimized"] == pytest.approx(128000.0)
    assert d["over_floor"] == pytest.approx(2.0) and d["op_over_engine"] == pytest.approx(1.5)
    line = format_table([row]).splitlines()[2]
    assert line.startswith("| wd | 512 | 0 | 10.00 | 4.00 | 2.50x | 51,200 | 128,000 | 3.000 | 0.500 | 6.0x |")
    assert "| 87.5% simulated GPU (CPU: all resident) |" in line


def test_alternate_takes_turns_on_a_known_clock(monkeypatch):
    """tiemb.timing.alternate with a clock that only the calls advance: a call
    costing 1 s and one costing 3 s give samples of exactly 1 and 3, taken in
    turns after the warm-up; ms_stats turns them into milliseconds."""
    from tiemb import timing

    clock = [0.0]
    calls = []
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock[0])

    def cost(name, seconds):
        def fn():
            calls.append(name)
            clock[0] += seconds
        return fn

    samples = timing.alternate([cost("a", 1.0), cost("b", 3.0)], 3, warmup=2, per_round=2)
    assert samples == [[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]
    assert calls == ["a", "a", "b", "b"] + ["a", "a", "b", "b"] * 3
    assert timing.ms_stats([0.001, 0.005, 0.002]) == {"median_ms": 2.0, "min_ms": 1.0, "max_ms": 5.0, "runs": 3}
