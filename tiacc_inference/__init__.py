"""TI-ACC's name for tiemb's interface (seed 000): ``import tiacc_inference``
then ``tiacc_inference.optimize(...)``, ``tiacc_inference.OptimizeConfig()``."""

from tiemb import OptimizeConfig, OptimizedReport, optimize, parse_input_shapes

__all__ = ["optimize", "OptimizeConfig", "OptimizedReport", "parse_input_shapes"]
