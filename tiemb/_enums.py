"""Enumerations that cross into the C++ core as ints.

Keep the values in sync with csrc/core/types.h.
"""

COMBINERS = {"sum": 0, "mean": 1, "sqrtn": 2}
ROW_MODES = {"plain": 0, "safe": 1, "gather": 2}
DTYPES = {"float32": 0, "float16": 1, "int32": 2, "int64": 3}
