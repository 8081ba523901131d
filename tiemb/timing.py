"""The one timing helper: calls taken in turns, their statistics, and the
machine they ran on. ``optimize()``, the SavedModel rewriter's backend
choice and the benchmark harness (:mod:`tiemb.bench`) all time through it."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable, Dict, List, Optional, Sequence


def machine_name() -> str:
    """CPU model and core count, e.g. 'Intel(R) Xeon(R) ... (2 cores)'."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def alternate(fns: Sequence[Callable[[], object]], rounds: int, *, warmup: int = 5, per_round: int = 1,
              progress: Optional[Callable[[int, int], None]] = None) -> List[List[float]]:
    """Seconds per call of each function, one sample per round and function.

    Args:
        fns: no-argument callables to compare.
        rounds: samples per function.
        warmup: untimed calls of each function first.
        per_round: back-to-back calls one sample averages over.
        progress: ``progress(done, rounds)`` after each round, or None.

    The functions take turns round by round, so drift of the machine (clock,
    other load) hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples: List[List[float]] = [[] for _ in fns]
    for r in range(rounds):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            samples[k].append((time.perf_counter() - t0) / per_round)
        if progress:
            progress(r + 1, rounds)
    return samples


def ms_stats(seconds: Sequence[float]) -> Dict[str, float]:
    """``{"median_ms", "min_ms", "max_ms", "runs"}`` of samples in seconds."""
    ms = [s * 1e3 for s in seconds]
    return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms), "runs": len(ms)}


def median_seconds(fn: Callable[[], object], runs: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``runs`` calls of ``fn`` after ``warmup`` untimed ones."""
    return statistics.median(alternate([fn], runs, warmup=warmup)[0])
