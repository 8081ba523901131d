"""TI-ACC's name for the TensorFlow config class (seed 000): ``tiacc_tf.OptimizeConfig()``."""

from tiemb import OptimizeConfig

__all__ = ["OptimizeConfig"]
