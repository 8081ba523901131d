"""Benchmark harness: synthetic data, timing, machine description."""
