"""``Settings``: the ``tiemb/*`` parameters of one optimization, parsed once.

:class:`tiemb.OptimizeConfig` is the seed-000 object users fill in
(``parameter_map["tiemb/..."].i``); :meth:`Settings.from_config` turns it
into this frozen, typed value that the rest of the pipeline reads. The
defaults and the per-key checks are ``tiemb.config.PARAMETERS``'s, written
once there.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

from .config import PARAMETERS, ConfigError, FIELD_TYPES, OptimizeConfig, check_tiers

# Settings field -> its tiemb/* key (a parameter without a field here is kept in `extra`).
_KEY_OF = {"max_batch_size": "tiemb/max_batch_size", "slot_num": "tiemb/slot_num", "max_nnz": "tiemb/max_nnz",
           "cache_percentage": "tiemb/cache_percentage", "cpu_cache_percentage": "tiemb/cpu_cache_percentage",
           "hit_rate_threshold": "tiemb/hit_rate_threshold", "enable_distributed": "tiemb/enable_distributed",
           "distributed_address": "tiemb/distributed_address", "distributed_namespace": "tiemb/distributed_namespace",
           "distributed_timeout_ms": "tiemb/distributed_timeout_ms", "distributed_retries": "tiemb/distributed_retries",
           "refresh_seconds": "tiemb/refresh_seconds"}
SIZE_KEYS = ("tiemb/max_batch_size", "tiemb/slot_num", "tiemb/max_nnz")


def _default(key: str):
    return PARAMETERS[key][1]


@dataclass(frozen=True)
class Settings:
    """The validated ``tiemb/*`` values (see README "Configuration").

    Fields:
        max_batch_size, slot_num, max_nnz: engine sizes; None until inferred
            from the model (:mod:`tiemb.sizes`).
        cache_percentage: share of each table's rows in the GPU cache.
        cpu_cache_percentage: share of rows in host memory.
        hit_rate_threshold: below it, misses are inserted before a call returns.
        enable_distributed: the backing store is a Redis Cluster.
        distributed_address: the cluster's nodes, "host:port[,host:port...]"
            (None: TIEMB_REDIS_ADDRESS, resolved by OptimizeConfig).
        distributed_namespace, distributed_timeout_ms, distributed_retries,
            refresh_seconds: the cluster's key namespace, per-request timeout,
            retries and the serving processes' refresh period (README
            "Distributed tables").
        output_names: the model outputs to compare, or None.
        extra: parameters of ``PARAMETERS`` that have no field here yet,
            as sorted (key, value) pairs.
    """

    max_batch_size: Optional[int] = _default("tiemb/max_batch_size")
    slot_num: Optional[int] = _default("tiemb/slot_num")
    max_nnz: Optional[int] = _default("tiemb/max_nnz")
    cache_percentage: float = _default("tiemb/cache_percentage")
    cpu_cache_percentage: float = _default("tiemb/cpu_cache_percentage")
    hit_rate_threshold: float = _default("tiemb/hit_rate_threshold")
    enable_distributed: bool = _default("tiemb/enable_distributed")
    distributed_address: Optional[str] = _default("tiemb/distributed_address")
    distributed_namespace: str = _default("tiemb/distributed_namespace")
    distributed_timeout_ms: int = _default("tiemb/distributed_timeout_ms")
    distributed_retries: int = _default("tiemb/distributed_retries")
    refresh_seconds: float = _default("tiemb/refresh_seconds")
    output_names: Optional[Tuple[str, ...]] = None
    extra: Tuple[Tuple[str, object], ...] = ()

    @classmethod
    def from_config(cls, config: Optional[OptimizeConfig]) -> "Settings":
        """The settings of an :class:`OptimizeConfig` (None: all defaults);
        ConfigError naming the key for a bad entry."""
        if config is not None and not isinstance(config, OptimizeConfig):
            raise ConfigError(f"optimization_config must be a tiemb.OptimizeConfig, got {type(config).__name__}")
        return cls.from_values((config or OptimizeConfig()).resolve())

    @classmethod
    def from_values(cls, values: Mapping[str, object]) -> "Settings":
        """From ``{"tiemb/...": value, "output_names": [...]}`` (what
        :meth:`OptimizeConfig.resolve` returns); validated."""
        fields = {f: values[k] for f, k in _KEY_OF.items() if k in values}
        names = values.get("output_names")
        extra = tuple(sorted((k, v) for k, v in values.items()
                             if k not in _KEY_OF.values() and k != "output_names"))
        out = cls(**fields, output_names=tuple(names) if names is not None else None, extra=extra)
        out.validate()
        return out

    def validate(self) -> None:
        """Raises ConfigError "tiemb/<key>: must be ..., got ..." for a value of
        the wrong type or out of its range (None sizes are "to be inferred")."""
        for key, value in self.as_dict().items():
            if key == "output_names":
                if not value or not all(isinstance(v, str) and v for v in value):
                    raise ConfigError(f"output_names: must be a list of output names, got {value!r}")
                continue
            if key not in PARAMETERS:
                raise ConfigError(f"{key}: unknown parameter (known: {', '.join(sorted(PARAMETERS))})")
            field, default, check, meaning = PARAMETERS[key]
            if value is None and default is None:
                continue
            ok_type = {"i": lambda v: isinstance(v, int) and not isinstance(v, bool),
                       "f": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                       "b": lambda v: isinstance(v, bool)}.get(field, lambda v: True)(value)
            if not ok_type:
                raise ConfigError(f"{key}: must be of type {FIELD_TYPES[field]}, got {value!r}")
            if not check(value):
                raise ConfigError(f"{key}: must be {meaning}, got {value!r}")
        check_tiers(self.cache_percentage, self.cpu_cache_percentage)

    def with_sizes(self, sizes: Mapping[str, int]) -> "Settings":
        """A copy with the engine sizes ``{"tiemb/max_batch_size": ..., ...}`` set; validated."""
        field_of = {k: f for f, k in _KEY_OF.items()}
        out = dataclasses.replace(self, **{field_of[k]: int(v) for k, v in sizes.items()})
        out.validate()
        return out

    def as_dict(self) -> Dict[str, object]:
        """``{"tiemb/...": value}`` (and ``output_names`` where set): the
        config's plain values, as saved with the model and in the report."""
        out = {k: getattr(self, f) for f, k in _KEY_OF.items()}
        out.update(self.extra)
        if self.output_names is not None:
            out["output_names"] = list(self.output_names)
        return out

    def sizes(self) -> Dict[str, Optional[int]]:
        """The engine sizes, ``{"tiemb/max_batch_size": ..., "tiemb/slot_num": ..., "tiemb/max_nnz": ...}``."""
        return {k: getattr(self, f) for f, k in _KEY_OF.items() if k in SIZE_KEYS}

    def tiers(self) -> Dict[str, object]:
        """The tier parameters (everything but the sizes and output names)."""
        return {k: v for k, v in self.as_dict().items() if k not in SIZE_KEYS and k != "output_names"}

    def to_json(self) -> str:
        """The plain values as JSON (sorted keys), as written beside the tables."""
        return json.dumps(self.as_dict(), indent=2, sort_keys=True)
