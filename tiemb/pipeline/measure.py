"""Step 7: the original and the optimized model timed side by side."""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from ..timing import alternate, ms_stats

WARMUP_RUNS = 5


def time_models(original_run, optimized_run, batch: Dict[str, np.ndarray], runs: int,
                progress: Optional[Callable] = None) -> dict:
    """The report's ``timing`` field: both models called alternately on
    ``batch`` (``runs`` calls each after WARMUP_RUNS), medians, min and max.
    ``progress(stage, done, total)`` after each round, or None."""
    base_s, opt_s = alternate([lambda: original_run(batch), lambda: optimized_run(batch)], runs,
                              warmup=WARMUP_RUNS,
                              progress=(lambda i, n: progress("timing", i, n)) if progress else None)
    first = next(iter(batch.values()))
    size = first.shape[0] if first.ndim else 1
    b, o = ms_stats(base_s), ms_stats(opt_s)
    return {"baseline": b, "optimized": o, "batch": size, "warmup_runs": WARMUP_RUNS,
            "speedup": b["median_ms"] / o["median_ms"], "method": "alternating calls, one process, medians"}
