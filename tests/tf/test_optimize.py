"""optimize() end to end (the seed's call in its own words), its report, its
errors, and the command line as a newcomer uses it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from serving import assert_same_outputs, serve_fresh, serve_here  # noqa: E402
from seed import seed_config  # noqa: E402
from tiemb import tf_ops  # noqa: E402
from tiemb.bench import models  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")

VOCAB = models.vocab_for("tiny")


@pytest.fixture(scope="module")
def wide_deep(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("models") / "wd")
    spec = models.wide_deep(path, VOCAB, tower=(64, 64), seed=1)
    return path, spec


def test_seed_call_end_to_end(wide_deep, tmp_path, seed):
    import tiacc_inference

    input_model, spec = wide_deep
    input_shapes = [{"range": ["1*26", "512*26"], "int": True}, {"range": ["1*13", "512*13"]}]   # cat, dense
    save_path = str(tmp_path / "optimized")
    output_model, optimized_report = tiacc_inference.optimize(input_model, 0, 1, input_shapes, None, None, None,
                                                              save_path, seed_config(512, 52, 26))
    r = optimized_report.to_dict()
    # The seed's fields, with the right types and consistent numbers.
    assert {e["software"] for e in r["software_environment"]} >= {"tensorflow", "tiemb"}
    assert all(isinstance(e["version"], str) for e in r["software_environment"])
    assert r["hardware_environment"]["device_type"] == "cpu" and r["hardware_environment"]["microarchitecture"]
    assert r["test_data_info"]["test_data_source"] == "tiacc provided"
    assert "cat: (512, 26)" in r["test_data_info"]["test_data_shape"]
    res = r["optimization_result"]
    base, opt = float(res["baseline_time"].removesuffix(" ms")), float(res["optimized_time"].removesuffix(" ms"))
    t = r["timing"]
    assert float(res["speedup"]) == pytest.approx(t["baseline"]["median_ms"] / t["optimized"]["median_ms"], abs=0.006)
    assert float(res["speedup"]) == pytest.approx(base / opt, rel=0.01)
    assert float(res["baseline_qps"]) == pytest.approx(512e3 / t["baseline"]["median_ms"], abs=1)
    assert t["baseline"]["min_ms"] <= t["baseline"]["median_ms"] <= t["baseline"]["max_ms"]
    assert r["accuracy"]["max_rel_diff"] <= 1e-6 and r["accuracy"]["batches"] == 2    # range: largest and smallest
    assert r["rewrite"]["found"] == r["rewrite"]["replaced"] == 52
    assert r["dense_backend"]["dense_backend"] in ("xla", "tensorflow")
    assert r["config"]["values"]["tiemb/slot_num"] == 52 and r["config"]["inferred"] == {}
    json.loads(str(optimized_report))                                   # prints as JSON
    with open(os.path.join(save_path, "tiemb_report.json")) as f:
        assert json.load(f)["optimization_result"] == res
    with open(os.path.join(save_path, "assets", "tiemb_config.json")) as f:
        assert json.load(f)["tiemb/max_nnz"] == 26
    # The returned model is the loaded optimized SavedModel, and it equals the original.
    batch = models.random_batch(spec, 33, np.random.default_rng(seed))
    got = output_model.signatures["serving_default"](**{k: tf.constant(v) for k, v in batch.items()})
    want = serve_here(input_model, [batch])[0]
    np.testing.assert_allclose(got["prob"].numpy(), want["prob"], rtol=1e-6, atol=1e-7)
    assert_same_outputs(serve_here(input_model, [batch]), serve_fresh(save_path, [batch]))


def test_user_test_data_names_and_inference(wide_deep, tmp_path, seed):
    input_model, spec = wide_deep
    rng = np.random.default_rng(seed)
    data = [models.random_batch(spec, 64, rng), models.real_batch(spec)]
    _, report = tiemb.optimize(input_model, 0, "cpu", "dense:float(64*13)\ncat:int64(64*26)",
                               output_nodes_names=["prob"], test_data=data, save_path=str(tmp_path / "o"), runs=3)
    r = report.to_dict()
    assert r["test_data_info"]["test_data_source"] == "user provided" and r["accuracy"]["batches"] == 2
    # max_batch_size inferred from the data (200 real rows); every feature is one column of `cat`, looked up by
    # two tables (deep and wide): one id per sample, 26 features.
    values, inferred = r["config"]["values"], r["config"]["inferred"]
    assert values["tiemb/max_batch_size"] == 200 and values["tiemb/max_nnz"] == 1 and values["tiemb/slot_num"] == 26
    assert set(inferred) == {"tiemb/max_batch_size", "tiemb/max_nnz", "tiemb/slot_num"}
    assert inferred["tiemb/max_batch_size"].startswith("200: feature 'cat[:, 0]' has 200 samples in test batch 1")
    assert inferred["tiemb/slot_num"].startswith("26: the fused op tiemb/lookup_0 reads 26 features (distinct id "
                                                 "inputs: cat[:, 0], cat[:, 1],")
    # The cache field: CPU serving keeps every table resident; the advisor's simulation of the GPU cache on
    # the test data, per table (W&D: a deep and a wide table per feature).
    cache = r["cache"]
    assert "every table is resident in host memory" in cache["tiers"]
    sim = cache["simulated"]["tables"]
    assert len(sim) == 52 and cache["simulated"]["batches"] == 2
    for t in sim.values():
        assert 0.0 <= t["expected_hit_rate"] <= 1.0 and t["backing_hit_rate"] == 0.0
        assert t["recommended_hit_rate"] >= 0.95 and 0 < t["recommended_cache_percentage"] <= 1.0


def test_errors_say_what_is_wrong(wide_deep, tmp_path):
    input_model, spec = wide_deep
    shapes = ["512*26", "512*13"]
    out = str(tmp_path / "o")
    cases = [
        (dict(optimization_level=2), r"optimization_level must be 0 \(lossless\) or 1 \(FP16\), got 2"),
        (dict(device_type=7), r"device_type must be 0 or 'gpu' \(GPU\), 1 or 'cpu' \(CPU\), got 7"),
        (dict(input_model=str(tmp_path / "nothing")), r"does not exist"),
        (dict(input_nodes_names=["cat", "user"]), r"input_nodes_names \['user'\] do not exist; the model's inputs "
                                                  r"are \['cat', 'dense'\]"),
        (dict(output_nodes_names=["score"]), r"output_nodes_names \['score'\] do not exist; the model's outputs are "
                                             r"\['prob'\]"),
        (dict(input_shapes=["512*26"]), r"input_shapes has 1 entries but the model has 2 inputs"),
        (dict(input_shapes="cat:int64(512*26)\nuser:float(5)"), r"input_shapes names \['user'\], which are not inputs"),
        (dict(test_data=[{"cat": np.zeros((4, 26), np.int64)}]), r"test_data\[0\]: inputs \['dense'\] missing"),
        (dict(save_path=str(tmp_path / "o.pb")), r"is a \.pb file but the input is a SavedModel"),
    ]
    for change, message in cases:
        kw = dict(input_model=input_model, optimization_level=0, device_type=1, input_shapes=shapes,
                  save_path=out, runs=2)
        kw.update(change)
        with pytest.raises(ValueError, match=message):
            tiemb.optimize(**kw)
        assert not os.path.exists(out)
    if not tf.config.list_physical_devices("GPU"):
        with pytest.raises(ValueError, match=r"device_type asks for a GPU but TensorFlow sees none here"):
            tiemb.optimize(input_model, 0, 0, shapes, save_path=out)
    cfg = tiemb.OptimizeConfig()
    cfg.parameter_map["tiemb/slot_num"].i = 8
    with pytest.raises(ValueError, match=r"tiemb/slot_num = 8 but the fused op tiemb/lookup_0 reads 26 features "
                                         r"\(distinct id inputs: cat\[:, 0\], .*\) \(needs tiemb/slot_num >= 26\)"):
        tiemb.optimize(input_model, 0, 1, shapes, save_path=out, optimization_config=cfg)
    # An id outside a table: the check fails, and nothing is left at save_path.
    bad = models.random_batch(spec, 8, np.random.default_rng(0))
    bad["cat"][0, 1] = VOCAB[1] + 5
    with pytest.raises(Exception, match=r"out of range|not in \[0"):
        tiemb.optimize(input_model, 0, 1, ["8*26", "8*13"], test_data=[bad], save_path=out, runs=2)
    assert not os.path.exists(out) and not [p for p in os.listdir(tmp_path) if p.startswith(".tiemb-")]
    os.makedirs(out)
    open(os.path.join(out, "keep.txt"), "w").close()
    with pytest.raises(ValueError, match=r"exists and is not empty; pass overwrite=True"):
        tiemb.optimize(input_model, 0, 1, shapes, save_path=out)


def test_frozen_graph_and_graphdef_inputs(tmp_path, seed):
    """A .pb comes back as a GraphDef (and a .pb with its store beside it); so does a GraphDef object."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    rng = np.random.default_rng(seed)
    table = tf.Variable(rng.standard_normal((50, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int64, name="ids")])
    def f(ids):
        return tf.reduce_sum(tf.gather(table, ids), 1, name="out")

    gd = convert_variables_to_constants_v2(f.get_concrete_function()).graph.as_graph_def()
    src = str(tmp_path / "model.pb")
    with open(src, "wb") as fh:
        fh.write(gd.SerializeToString())
    out_pb = str(tmp_path / "opt" / "model.pb")
    model, report = tiemb.optimize(src, 0, 1, ["16*3"], save_path=out_pb, runs=3)
    assert isinstance(model, type(gd)) and "TiembLookup" in {n.op for n in model.node}
    assert os.path.isdir(out_pb + ".store") and os.path.exists(out_pb + ".report.json")
    assert report.rewrite["replaced"] == 1 and report.accuracy["max_rel_diff"] <= 1e-6
    assert report.to_dict()["test_data_info"]["test_data_type"] == "ids: int64"
    # ids were generated inside the table: 50 rows.
    from tiemb.rewrite import load_frozen_graph

    ids = rng.integers(0, 50, (7, 3))
    run = load_frozen_graph(out_pb, ["ids:0"], ["Identity:0"])
    want = f(tf.constant(ids)).numpy()
    np.testing.assert_allclose(run(tf.constant(ids))[0].numpy(), want, rtol=1e-6)
    model2, report2 = tiemb.optimize(gd, 0, "cpu", "ids:int64(4*3)", save_path=str(tmp_path / "g.pb"), runs=3)
    assert report2.rewrite["replaced"] == 1
    store = [n for n in model2.node if n.name == "tiemb/store"][0]
    assert store.attr["value"].tensor.string_val[0].decode() == os.path.abspath(str(tmp_path / "g.pb.store"))


def run_cli(*args, cwd="/"):
    return subprocess.run([sys.executable, "-m", "tiemb", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_cli_as_a_newcomer_uses_it(wide_deep, tmp_path):
    input_model, _ = wide_deep
    proc = run_cli("inspect", input_model)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads(proc.stdout)
    assert [i["name"] for i in info["inputs"]] == ["cat", "dense"] and info["outputs"] == ["prob"]
    assert len(info["lookups"]) == 52 and info["lookups"][0]["table_shape"] == [VOCAB[0], 16]
    out = str(tmp_path / "opt")
    proc = run_cli("optimize", input_model, "--save", out, "--input-shapes", "cat:int64(128*26)",
                   "dense:float(128*13)", "--param", "tiemb/cache_percentage=0.3", "--runs", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["config"]["values"]["tiemb/cache_percentage"] == 0.3 and report["rewrite"]["replaced"] == 52
    assert "timing [" in proc.stderr and "3/3 runs" in proc.stderr
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"tiemb/max_batch_size": 128, "tiemb/max_nnz": 26}))
    proc = run_cli("optimize", input_model, "--save", out, "--overwrite", "--config", str(cfg), "--runs", "2",
                   "--input-shapes", '[{"range,int": ["1*26", "128*26"]}, "128*13"]')
    assert proc.returncode == 0, proc.stderr[-2000:]
    for args, message in [
        (("optimize", input_model, "--save", out, "--input-shapes", "512*26", "512*13"),
         "exists and is not empty; pass overwrite=True"),
        (("optimize", input_model, "--save", str(tmp_path / "x"), "--input-shapes", "512*2x6", "512*13"),
         "bad dimension '2x6'"),
        (("optimize", input_model, "--save", str(tmp_path / "x"), "--input-shapes", "512*26", "512*13",
          "--param", "tiemb/cache=1"), "tiemb/cache: unknown parameter"),
        (("optimize", input_model, "--save", str(tmp_path / "x")), "--input-shapes is required"),
        (("inspect", str(tmp_path / "missing")), "does not exist"),
    ]:
        proc = run_cli(*args)
        assert proc.returncode == 1, (args, proc.stdout[-500:], proc.stderr[-2000:])
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("tiemb ")]
        assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    proc = run_cli("optimize", input_model)
    assert proc.returncode == 2 and "--save" in proc.stderr
