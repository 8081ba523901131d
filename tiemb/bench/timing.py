"""Side-by-side timing for the harness, built on the library's :mod:`tiemb.timing`."""

import statistics

from ..timing import alternate, machine_name

__all__ = ["alternate", "machine_name", "time_side_by_side"]


def time_side_by_side(fns: dict, *, warmup: int = 20, rounds: int = 30, per_round: int = 10) -> dict:
    """Median/min/max seconds per call of each function, measured alternately (see :func:`alternate`)."""
    samples = alternate(list(fns.values()), rounds, warmup=warmup, per_round=per_round)
    return {name: {"median": statistics.median(s), "min": min(s), "max": max(s)} for name, s in zip(fns, samples)}
