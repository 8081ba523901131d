"""Side-by-side timing and a description of the machine it ran on."""

import os
import platform
import statistics
import time


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


def alternate(fns, rounds: int, *, warmup: int = 5, per_round: int = 1, progress=None):
    """Seconds per call of each function, one sample per round and function.

    The functions take turns round by round (after ``warmup`` calls each), so
    drift of the machine (clock, other load) hits all of them alike; a sample
    is the mean of ``per_round`` back-to-back calls. ``progress(done, rounds)``
    is called after each round."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples = [[] for _ in fns]
    for r in range(rounds):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            samples[k].append((time.perf_counter() - t0) / per_round)
        if progress:
            progress(r + 1, rounds)
    return samples


def time_side_by_side(fns: dict, *, warmup: int = 20, rounds: int = 30, per_round: int = 10) -> dict:
    """Median/min/max seconds per call of each function, measured alternately (see :func:`alternate`)."""
    samples = alternate(list(fns.values()), rounds, warmup=warmup, per_round=per_round)
    return {name: {"median": statistics.median(s), "min": min(s), "max": max(s)} for name, s in zip(fns, samples)}
