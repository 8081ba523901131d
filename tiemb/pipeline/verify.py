"""Step 6: the optimized model's outputs against the original's."""

from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np

from .errors import OptimizeError

Runner = Callable[[Dict[str, np.ndarray]], Dict[str, np.ndarray]]


def max_difference(original_run: Runner, optimized_run: Runner, batches: List[Dict[str, np.ndarray]]) \
        -> Tuple[float, float]:
    """(max absolute, max relative) output difference over all batches
    (see :func:`tiemb.backends.relative_difference`)."""
    from ..backends import relative_difference

    abs_d = rel_d = 0.0
    for b in batches:
        a, r = relative_difference(original_run(b), optimized_run(b))
        abs_d, rel_d = max(abs_d, a), max(rel_d, r)
    return abs_d, rel_d


def verify(original_run: Runner, optimized_run: Runner, batches, level: int, where: str) -> dict:
    """The report's ``accuracy`` field; OptimizeError naming ``where`` (the
    saved model) when the outputs differ beyond the level's tolerance."""
    from ..backends import TOLERANCE

    abs_d, rel_d = max_difference(original_run, optimized_run, batches)
    tol = TOLERANCE[level]
    if rel_d > tol:
        raise OptimizeError(f"the optimized model at {where} gives outputs that differ by {rel_d:.3g} "
                            f"relative (level {level} allows {tol:g}); the previous contents were restored")
    return {"max_abs_diff": abs_d, "max_rel_diff": rel_d, "tolerance": tol, "batches": len(batches)}
