"""input_shapes (every example of seeds 000 and 001, and malformed ones) and
OptimizeConfig (the seed's parameter_map lines, and bad entries). No TensorFlow needed."""

import pytest

from tiemb import ConfigError, OptimizeConfig, ShapeSpecError, parse_input_shapes
from seed import seed_config


def parsed(spec):
    return [s.as_dict() for s in parse_input_shapes(spec)]


def one(name, dtype, kind, *shapes):
    return {"name": name, "dtype": dtype, "kind": kind, "shapes": [list(s) for s in shapes]}


@pytest.mark.parametrize("spec, want", [
    # seed 000
    (["1*3*224*224"], [one(None, None, "fixed", (1, 3, 224, 224))]),
    ([["1*3*224*224"], ["1*3*512*512"]], [one(None, None, "fixed", (1, 3, 224, 224)),
                                          one(None, None, "fixed", (1, 3, 512, 512))]),
    ([{"seperate": ["1*3*224*224", "2*3*224*224"]}],
     [one(None, None, "discrete", (1, 3, 224, 224), (2, 3, 224, 224))]),
    ([{"separate": ["1*3*224*224", "2*3*224*224"]}],
     [one(None, None, "discrete", (1, 3, 224, 224), (2, 3, 224, 224))]),
    ([{"range": ["1*3*224*224", "10*3*224*224"]}], [one(None, None, "range", (1, 3, 224, 224), (10, 3, 224, 224))]),
    ([{"range": ["1*26", "512*26"], "int": True}], [one(None, "int32", "range", (1, 26), (512, 26))]),
    ([{"range,int": ["1*26", "512*26"]}], [one(None, "int32", "range", (1, 26), (512, 26))]),
    ([{"seperate,half": ["8*13", "16*13"]}], [one(None, "float16", "discrete", (8, 13), (16, 13))]),
    ([{"int": "512*26"}, "512*13"], [one(None, "int32", "fixed", (512, 26)), one(None, None, "fixed", (512, 13))]),
    ([{"range": ["1*13", "4*13"], "dtype": "int64"}], [one(None, "int64", "range", (1, 13), (4, 13))]),
    # seed 001
    ("input_0:float(1*3*1024*1024)", [one("input_0", "float32", "fixed", (1, 3, 1024, 1024))]),
    (["input_0:int32(1*4,1*384)", "input_1:int32(1*4,1*384)", "input_2:int32(1*4,1*384)"],
     [one(f"input_{k}", "int32", "range", (1, 4), (1, 384)) for k in range(3)]),
    ("input_ids:int32(1*128,8*128)\ninput_mask:int32(1*128,8*128)\nsegment_ids:int32(1*128,8*128)",
     [one(n, "int32", "range", (1, 128), (8, 128)) for n in ("input_ids", "input_mask", "segment_ids")]),
    ("x:int32([1*4,2*4])", [one("x", "int32", "discrete", (1, 4), (2, 4))]),
    ("input_0:float([3*1024*1024,3*2048*2048])", [one("input_0", "float32", "discrete", (3, 1024, 1024),
                                                      (3, 2048, 2048))]),
    ("input_0[0]:float(1*3)\ninput_0(1):int64(2*5)\ninputs[ids]:array.char(4)",
     [one("input_0[0]", "float32", "fixed", (1, 3)), one("input_0(1)", "int64", "fixed", (2, 5)),
      one("inputs[ids]", "string", "fixed", (4,))]),
    (["dense:float(512*13)", "cat:int64(512*26)"], [one("dense", "float32", "fixed", (512, 13)),
                                                    one("cat", "int64", "fixed", (512, 26))]),
])
def test_every_seed_form_parses(spec, want):
    assert parsed(spec) == want


@pytest.mark.parametrize("spec, message", [
    (["1*3*x*224"], r"input_shapes\[0\]: bad dimension 'x' at position 4"),
    (["1*3**224"], r"bad dimension '' at position 4"),
    (["0*3"], r"bad dimension '0' at position 0"),
    ("input_0:float(1*3*1024*1O24)", r"line 1 .*: bad dimension '1O24' at position 23"),
    ("input_0 float(1*3)", r"line 1 .*: expected 'element:dtype\(shape\)', no ':' found"),
    ("input_0:float 1*3", r"line 1 .*: expected '\(shape\)' after the dtype at position 8"),
    ("input_0:floot(1*3)", r"line 1 .*: unknown dtype 'floot'"),
    ("x:int32([1*4,2*4)", r"line 1 .*: discrete size list at position 8 is not closed"),
    ("x:int32(1*4,2*4,3*4)", r"line 1 .*: a range has two sizes 'min,max'; got 3"),
    ("x:int32(4*4,2*4)", r"line 1 .*: range minimum \(4, 4\) exceeds its maximum \(2, 4\)"),
    ("x:int32(1*4,2*4*1)", r"line 1 .*: range ends have different ranks"),
    ("x:int32([1*4,2*4*2])", r"line 1 .*: discrete sizes have different ranks"),
    ("a:float(1)\na:float(2)", r"input_shapes names 'a' twice"),
    ("in put:float(1)", r"line 1 .*: bad element name 'in put'"),
    ([{"range": ["1*3"]}], r"input_shapes\[0\]: 'range' takes \[min, max\], got 1 sizes"),
    ([{"ranges": ["1*3", "2*3"]}], r"input_shapes\[0\]: unknown key 'ranges'"),
    ([{"int": True}], r"input_shapes\[0\]: no size"),
    ([{"range": "1*3"}], r"input_shapes\[0\]: range sizes are a list of strings"),
    ([{"range,int,float": ["1", "2"]}], r"names two sizes or two dtypes"),
    ([3], r"input_shapes\[0\]: expected a size string, a list of them or a dict, got int"),
    ([], r"input_shapes must be a non-empty list"),
    (None, r"input_shapes is required"),
])
def test_malformed_specs_point_at_the_bad_part(spec, message):
    with pytest.raises(ShapeSpecError, match=message):
        parse_input_shapes(spec)


def test_seed_config_and_defaults():
    assert seed_config().resolve() == {"tiemb/max_batch_size": 512, "tiemb/slot_num": 26, "tiemb/max_nnz": 10,
                                       "tiemb/cache_percentage": 0.2, "tiemb/cpu_cache_percentage": 1.0,
                                       "tiemb/hit_rate_threshold": 0.95, "tiemb/enable_distributed": False,
                                       "tiemb/distributed_address": None, "tiemb/distributed_namespace": "tiemb",
                                       "tiemb/distributed_timeout_ms": 1000, "tiemb/distributed_retries": 5,
                                       "tiemb/refresh_seconds": 5.0}
    empty = OptimizeConfig().resolve()
    assert empty["tiemb/max_batch_size"] is None and empty["tiemb/cache_percentage"] == 0.2
    cfg = OptimizeConfig()
    cfg.parameter_map["output_names"].s = ["prob"]
    assert cfg.resolve()["output_names"] == ["prob"]
    cfg = OptimizeConfig.from_params(["tiemb/max_nnz=4", "tiemb/cache_percentage=0.5", "tiemb/enable_distributed=false",
                                      "output_names=a,b"])
    assert cfg.resolve()["tiemb/max_nnz"] == 4 and cfg.resolve()["output_names"] == ["a", "b"]
    assert OptimizeConfig.from_dict({"tiemb/cache_percentage": 1}).resolve()["tiemb/cache_percentage"] == 1.0


@pytest.mark.parametrize("setup, message", [
    (lambda c: setattr(c.parameter_map["tiemb/max_batch"], "i", 5), r"tiemb/max_batch: unknown parameter"),
    (lambda c: setattr(c.parameter_map["tiemb/max_nnz"], "f", 5.0), r"tiemb/max_nnz: takes \.i \(int\), was set through \.f"),
    (lambda c: setattr(c.parameter_map["tiemb/max_nnz"], "i", 0), r"tiemb/max_nnz: must be a positive integer, got 0"),
    (lambda c: setattr(c.parameter_map["tiemb/max_nnz"], "i", "8"), r"tiemb/max_nnz: must be of type int, got '8'"),
    (lambda c: setattr(c.parameter_map["tiemb/cache_percentage"], "f", 1.5), r"tiemb/cache_percentage: must be in \(0, 1\]"),
    (lambda c: setattr(c.parameter_map["tiemb/hit_rate_threshold"], "f", -0.1), r"tiemb/hit_rate_threshold: must be in \[0, 1\]"),
    (lambda c: setattr(c.parameter_map["tiemb/enable_distributed"], "b", True),
     r"tiemb/enable_distributed: needs the cluster's address"),
    (lambda c: setattr(c.parameter_map["tiemb/distributed_address"], "s", "localhost"),
     r"tiemb/distributed_address: must be host:port\[,host:port...\], got 'localhost'"),
    (lambda c: setattr(c.parameter_map["tiemb/distributed_namespace"], "s", "a b"),
     r"tiemb/distributed_namespace: must be a non-empty string"),
    (lambda c: setattr(c.parameter_map["tiemb/distributed_retries"], "i", -1), r"tiemb/distributed_retries: must be in"),
    (lambda c: (setattr(c.parameter_map["tiemb/cache_percentage"], "f", 0.5),
                setattr(c.parameter_map["tiemb/cpu_cache_percentage"], "f", 0.3)),
     r"tiemb/cpu_cache_percentage \(0.3\) must be at least tiemb/cache_percentage \(0.5\)"),
    (lambda c: setattr(c, "output_names", "prob"), r"output_names: must be a list of output names"),
])
def test_bad_config_entries_name_the_key(setup, message, monkeypatch):
    monkeypatch.delenv("TIEMB_REDIS_ADDRESS", raising=False)
    cfg = OptimizeConfig()
    setup(cfg)
    with pytest.raises(ConfigError, match=message):
        cfg.resolve()


def test_bad_params_and_fields():
    with pytest.raises(ConfigError, match=r"--param 'tiemb/max_nnz': expected key=value"):
        OptimizeConfig.from_params(["tiemb/max_nnz"])
    with pytest.raises(ConfigError, match=r"tiemb/max_nnz: 'four' is not of type int"):
        OptimizeConfig.from_params(["tiemb/max_nnz=four"])
    cfg = OptimizeConfig()
    cfg.parameter_map["tiemb/max_nnz"].i = 3
    with pytest.raises(ConfigError, match=r"already set through \.i"):
        cfg.parameter_map["tiemb/max_nnz"].f = 3.0
    with pytest.raises(AttributeError, match=r"fields \.i, \.f, \.b and \.s, not \.x"):
        cfg.parameter_map["tiemb/max_nnz"].x = 1
