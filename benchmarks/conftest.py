"""Prints the TF/tiemb ratio of each benchmark pair at the end of the session."""

import pytest

_medians = {}


@pytest.fixture
def record_median():
    def record(key, side, benchmark):
        _medians.setdefault(key, {})[side] = benchmark.stats.stats.median
    return record


def pytest_terminal_summary(terminalreporter):
    from tiemb.bench.timing import machine_name

    if not _medians:
        return
    terminalreporter.section(f"tiemb vs TensorFlow (same inputs, this run) on {machine_name()}")
    for key, sides in sorted(_medians.items()):
        if {"tf", "tiemb"} <= sides.keys():
            terminalreporter.write_line(
                f"{key}: TF {sides['tf'] * 1e3:.3f} ms, tiemb {sides['tiemb'] * 1e3:.3f} ms, "
                f"speedup {sides['tf'] / sides['tiemb']:.1f}x")
