"""``OptimizeConfig``: the ``tiemb/*`` parameters, set as in seed 000::

    cfg = tiemb.OptimizeConfig()
    cfg.parameter_map["tiemb/max_batch_size"].i = 512
    cfg.parameter_map["tiemb/cache_percentage"].f = 0.2
    cfg.parameter_map["tiemb/enable_distributed"].b = False
    cfg.output_names = ["prob"]          # or parameter_map["output_names"].s = ["prob"]

Unknown keys, a value set through the wrong field (``.f`` for an int) and
out-of-range values are errors naming the key (:meth:`OptimizeConfig.resolve`).
The resolved values are saved with the optimized model (``tiemb_config.json``
in its table store).
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

# key -> (field, default (None: inferred from the model), check, meaning of the check)
PARAMETERS = {
    "tiemb/max_batch_size": ("i", None, lambda v: v >= 1, "a positive integer"),
    "tiemb/slot_num": ("i", None, lambda v: v >= 1, "a positive integer"),
    "tiemb/max_nnz": ("i", None, lambda v: v >= 1, "a positive integer"),
    "tiemb/cache_percentage": ("f", 0.2, lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "tiemb/cpu_cache_percentage": ("f", 1.0, lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "tiemb/hit_rate_threshold": ("f", 0.95, lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "tiemb/enable_distributed": ("b", False, lambda v: True, ""),
    # Distributed tables (tiemb/distributed/settings.py documents each; keep the defaults in sync there).
    # The address: "host:port[,host:port...]" (or a list of such strings); None: TIEMB_REDIS_ADDRESS.
    "tiemb/distributed_address": ("s", None, lambda v: _address_ok(v), "host:port[,host:port...]"),
    "tiemb/distributed_namespace": ("s", "tiemb", lambda v: _namespace_ok(v),
                                    "a non-empty string of letters, digits, '_', '-' and '.'"),
    "tiemb/distributed_timeout_ms": ("i", 1000, lambda v: 1 <= v <= 600000, "in [1, 600000]"),
    "tiemb/distributed_retries": ("i", 5, lambda v: 0 <= v <= 100, "in [0, 100]"),
    "tiemb/refresh_seconds": ("f", 5.0, lambda v: v >= 0.0, ">= 0 (0: refresh() only)"),
}
FIELD_TYPES = {"i": "int", "f": "float", "b": "bool", "s": "list of strings"}


class ConfigError(ValueError):
    """A bad optimization_config entry; the message names the key."""


class ParameterValue:
    """One ``parameter_map`` entry, like a protobuf AttrValue: set exactly one
    of ``.i`` (int), ``.f`` (float), ``.b`` (bool), ``.s`` (list of strings)."""

    __slots__ = ("_field", "_value")

    def __init__(self):
        object.__setattr__(self, "_field", None)
        object.__setattr__(self, "_value", None)

    def __setattr__(self, name, value):
        if name not in FIELD_TYPES:
            raise AttributeError(f"a parameter value has fields .i, .f, .b and .s, not .{name}")
        if self._field is not None and self._field != name:
            raise ConfigError(f"this entry was already set through .{self._field}; set one field only")
        object.__setattr__(self, "_field", name)
        object.__setattr__(self, "_value", value)

    def __getattr__(self, name):
        if name in FIELD_TYPES:
            if self._field == name:
                return self._value
            return {"i": 0, "f": 0.0, "b": False, "s": []}[name]
        raise AttributeError(name)

    @property
    def field(self) -> Optional[str]:
        return self._field

    @property
    def value(self):
        return self._value

    def __repr__(self):
        return f"ParameterValue({self._field}={self._value!r})" if self._field else "ParameterValue(unset)"


class _ParameterMap(dict):
    def __missing__(self, key):
        value = ParameterValue()
        self[key] = value
        return value


class OptimizeConfig:
    """The optimization config of seed 000 (also ``tiacc_tf.OptimizeConfig``)."""

    def __init__(self):
        self.parameter_map: Dict[str, ParameterValue] = _ParameterMap()
        self.output_names: Optional[List[str]] = None

    @classmethod
    def from_dict(cls, values: dict) -> "OptimizeConfig":
        """From ``{"tiemb/max_batch_size": 512, ..., "output_names": [...]}`` (a
        cfg.json): the field follows the default's type (an int for an int
        key, ...); a value of another type is reported by :meth:`resolve`."""
        cfg = cls()
        if not isinstance(values, dict):
            raise ConfigError(f"a config is a JSON object of 'tiemb/...' keys, got {type(values).__name__}")
        for key, value in values.items():
            if key == "output_names":
                cfg.output_names = value
                continue
            field = PARAMETERS[key][0] if key in PARAMETERS else "s"
            kind = {bool: "b", int: "i", float: "f"}.get(type(value))
            if kind == "i" and field == "f":
                kind = "f"            # 1 for a float parameter is fine
            setattr(cfg.parameter_map[key], kind or field, value)
        return cfg

    @classmethod
    def from_params(cls, params: List[str]) -> "OptimizeConfig":
        """From command-line ``key=value`` strings (``tiemb/cache_percentage=0.2``)."""
        values = {}
        for p in params:
            key, sep, text = p.partition("=")
            if not sep or not key:
                raise ConfigError(f"--param {p!r}: expected key=value, like tiemb/cache_percentage=0.2")
            key = key.strip()
            text = text.strip()
            field = PARAMETERS.get(key, ("s",))[0]
            try:
                if key == "output_names":
                    values[key] = [t for t in text.split(",") if t]
                elif field == "b":
                    if text.lower() not in ("true", "false", "1", "0"):
                        raise ValueError
                    values[key] = text.lower() in ("true", "1")
                elif field == "i":
                    values[key] = int(text)
                elif field == "f":
                    values[key] = float(text)
                else:
                    values[key] = text
            except ValueError:
                raise ConfigError(f"{key}: {text!r} is not of type {FIELD_TYPES[field]}") from None
        return cls.from_dict(values)

    def resolve(self) -> dict:
        """The validated values, defaults filled (None: to be inferred from
        the model), as a plain dict; :meth:`tiemb.settings.Settings.from_config`
        makes the frozen settings object of them. Raises ConfigError naming the key."""
        out = {key: default for key, (_, default, _, _) in PARAMETERS.items()}
        for key, entry in self.parameter_map.items():
            if key == "output_names":
                if entry.field != "s" or not _names(entry.value):
                    raise ConfigError("output_names: set .s to a list of output names")
                out["output_names"] = list(entry.value)
                continue
            if key not in PARAMETERS:
                known = ", ".join(sorted(PARAMETERS) + ["output_names"])
                raise ConfigError(f"{key}: unknown parameter (known: {known})")
            field, _, check, meaning = PARAMETERS[key]
            if entry.field is None:
                continue
            value = entry.value
            if entry.field != field:
                raise ConfigError(f"{key}: takes .{field} ({FIELD_TYPES[field]}), was set through .{entry.field}")
            ok_type = {"i": lambda v: isinstance(v, int) and not isinstance(v, bool),
                       "f": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
                       "b": lambda v: isinstance(v, bool),
                       "s": lambda v: isinstance(v, str) or _names(v)}[field](value)
            if not ok_type:
                raise ConfigError(f"{key}: must be of type {FIELD_TYPES[field]}, got {value!r}")
            if not check(value):
                raise ConfigError(f"{key}: must be {meaning}, got {value!r}")
            if field == "s":  # a one-string parameter also accepts a list (joined: addresses)
                value = value if isinstance(value, str) else ",".join(value)
            out[key] = float(value) if field == "f" else value
        if self.output_names is not None:
            if not _names(self.output_names):
                raise ConfigError(f"output_names: must be a list of output names, got {self.output_names!r}")
            out["output_names"] = list(self.output_names)
        check_tiers(out["tiemb/cache_percentage"], out["tiemb/cpu_cache_percentage"])
        if out["tiemb/enable_distributed"]:
            import os

            from . import _C

            if out["tiemb/distributed_address"] is None:
                out["tiemb/distributed_address"] = os.environ.get("TIEMB_REDIS_ADDRESS") or None
            if out["tiemb/distributed_address"] is None:
                raise ConfigError("tiemb/enable_distributed: needs the cluster's address: set "
                                  "tiemb/distributed_address (.s = 'host:port[,host:port...]') or TIEMB_REDIS_ADDRESS")
            if not _address_ok(out["tiemb/distributed_address"]):
                raise ConfigError(f"TIEMB_REDIS_ADDRESS: must be host:port[,host:port...], got "
                                  f"{out['tiemb/distributed_address']!r}")
            # After the address checks: a config is judged the same on every build.
            if not _C.redis_compiled():
                raise ConfigError("tiemb/enable_distributed: this tiemb was built without hiredis; install it "
                                  "(apt-get install libhiredis-dev) and rebuild (TIEMB_REDIS=ON)")
        return out

    def __repr__(self):
        set_ = {k: v.value for k, v in self.parameter_map.items() if v.field}
        return f"OptimizeConfig({json.dumps(set_)}, output_names={self.output_names!r})"


def _address_ok(value) -> bool:
    import re

    value = value if isinstance(value, str) else ",".join(value)
    return all(re.fullmatch(r"[^\s:,/]+:([1-9][0-9]{0,4})", p.strip()) and int(p.rsplit(":", 1)[1]) < 65536
               for p in value.split(","))


def _namespace_ok(value) -> bool:
    import re

    return isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_.\-]+", value) is not None


def check_tiers(cache_percentage: float, cpu_cache_percentage: float) -> None:
    """The rule between the tiers (shared with :class:`tiemb.settings.Settings`)."""
    if cpu_cache_percentage < cache_percentage:
        raise ConfigError(f"tiemb/cpu_cache_percentage ({cpu_cache_percentage}) must be at least "
                          f"tiemb/cache_percentage ({cache_percentage}): the host tier holds what "
                          "the GPU cache holds")


def _names(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, str) and v for v in value)
