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


def time_side_by_side(fns: dict, *, warmup: int = 20, rounds: int = 30, per_round: int = 10) -> dict:
    """Median/min/max seconds per call of each function, measured alternately.

    The functions take turns round by round, so drift of the machine (clock,
    other load) hits all of them alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(per_round):
                fn()
            samples[name].append((time.perf_counter() - t0) / per_round)
    return {name: {"median": statistics.median(s), "min": min(s), "max": max(s)} for name, s in samples.items()}
