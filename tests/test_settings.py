"""tiemb.settings.Settings: the frozen, validated form of an OptimizeConfig."""

import dataclasses

import pytest

from seed import seed_config
from tiemb import ConfigError, OptimizeConfig
from tiemb.config import PARAMETERS
from tiemb.settings import Settings


def test_defaults_are_the_parameter_table():
    s = Settings.from_config(None)
    for key, (_, default, _, _) in PARAMETERS.items():
        assert s.as_dict()[key] == default, key
    assert s.output_names is None and "output_names" not in s.as_dict()


def test_seed_config_round_trip_and_frozen():
    cfg = seed_config(512, 26, 10)
    s = Settings.from_config(cfg)
    assert (s.max_batch_size, s.slot_num, s.max_nnz) == (512, 26, 10)
    assert s.as_dict() == cfg.resolve()
    assert s.sizes() == {"tiemb/max_batch_size": 512, "tiemb/slot_num": 26, "tiemb/max_nnz": 10}
    assert set(s.tiers()) == set(PARAMETERS) - set(s.sizes())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_nnz = 3
    filled = Settings.from_config(OptimizeConfig()).with_sizes({"tiemb/max_batch_size": 64, "tiemb/slot_num": 3,
                                                                "tiemb/max_nnz": 2})
    assert (filled.max_batch_size, filled.slot_num, filled.max_nnz) == (64, 3, 2)
    cfg = OptimizeConfig()
    cfg.output_names = ["prob"]
    assert Settings.from_config(cfg).output_names == ("prob",)


@pytest.mark.parametrize("values, message", [
    ({"tiemb/max_nnz": 0}, r"tiemb/max_nnz: must be a positive integer, got 0"),
    ({"tiemb/max_nnz": 2.5}, r"tiemb/max_nnz: must be of type int, got 2.5"),
    ({"tiemb/cache_percentage": 1.5}, r"tiemb/cache_percentage: must be in \(0, 1\], got 1.5"),
    ({"tiemb/hit_rate_threshold": True}, r"tiemb/hit_rate_threshold: must be of type float, got True"),
    ({"tiemb/cache_percentage": 0.5, "tiemb/cpu_cache_percentage": 0.25},
     r"tiemb/cpu_cache_percentage \(0.25\) must be at least tiemb/cache_percentage \(0.5\)"),
    ({"output_names": []}, r"output_names: must be a list of output names, got \[\]"),
    ({"tiemb/no_such": 1}, r"tiemb/no_such: unknown parameter"),
])
def test_validate_names_the_key_and_the_value(values, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_values(values)


def test_with_sizes_is_validated_and_config_type_checked():
    with pytest.raises(ConfigError, match=r"tiemb/max_batch_size: must be a positive integer, got 0"):
        Settings.from_config(None).with_sizes({"tiemb/max_batch_size": 0})
    with pytest.raises(ConfigError, match=r"optimization_config must be a tiemb.OptimizeConfig, got dict"):
        Settings.from_config({"tiemb/max_nnz": 2})
