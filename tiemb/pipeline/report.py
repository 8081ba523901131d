"""Step 8: the :class:`tiemb.OptimizedReport` of one optimize() run: facts
about that run only (the user's model, data, settings and machine)."""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from ..report import OptimizedReport, hardware_environment, optimization_result, software_environment
from ..settings import Settings
from .load import Model


def _hit_rate(device: str, cache_percentage: float):
    """The report's ``cache.hit_rate``: what applies to this serving target.
    No model run here goes through a GPU cache, so there is no measured rate:
    on the CPU there is no cache to miss; on the GPU the rate is the serving
    process's, and ``simulated`` holds what tiemb advise expects."""
    if device == "cpu":
        return ("not applicable: CPU serving reads every row from host memory (every table resident), "
                "there is no GPU cache to hit or miss")
    return (f"not measured by optimize(): a GPU cache of {cache_percentage:g} of each table's rows fills while "
            "serving; see 'simulated' (with test_data) for the expected rate")


def cache_report(model: Model, rewritten, lookups: List[dict], batches, settings: Settings, device: str) -> dict:
    """The report's ``cache`` field: the tier settings, what applies to this
    serving target, and, with the user's test data, the GPU cache hit rate
    per table that ``tiemb advise`` simulates at the configured
    cache_percentage and the smallest cache_percentage reaching 95%."""
    pct, cpu = settings.cache_percentage, settings.cpu_cache_percentage
    out = {"gpu_cache_percentage": pct, "cpu_cache_percentage": cpu,
           "hit_rate_threshold": settings.hit_rate_threshold, "hit_rate": _hit_rate(device, pct)}
    if device == "cpu":
        out["tiers"] = ("CPU serving: every table is resident in host memory (served from there, hit rate 1); "
                        "the GPU cache and backing-store tiers do not apply")
    else:
        out["tiers"] = (f"GPU serving: tables with cache_percentage {pct} < 1 are tiered (GPU cache, "
                        f"{cpu:.0%} of rows in pinned host memory, the rest from a backing file)")
    if not batches:
        out["note"] = "pass test_data (real batches) for the GPU cache hit rates tiemb advise expects"
        return out
    out["simulated"] = _simulate(model, rewritten, lookups, batches, settings)
    return out


def _simulate(model: Model, rewritten, lookups: List[dict], batches, settings: Settings) -> dict:
    """The GPU cache hit rates ``tiemb advise`` expects on ``batches``, per table."""
    from .. import advise

    pct, cpu = settings.cache_percentage, settings.cpu_cache_percentage
    tables, traffic = advise.model_traffic(model, lookups, batches, rewritten)
    sim = {}
    for t in tables:
        if t.name not in traffic:
            continue
        try:
            a = advise.advise_table(t, traffic[t.name], 0.95, cpu, max_ids=settings.max_batch_size *
                                    settings.max_nnz, source="test_data")
        except advise.AdviseError as e:  # the model ran on these ids, so this is ours to report, not to raise
            sim[t.name] = {"error": str(e)}
            continue
        at = advise.simulate(t, traffic[t.name], pct, cpu, warmup=a["warmup_batches"])
        sim[t.name] = {"expected_hit_rate": at["hit_rate"], "host_hit_rate": at["host_hit_rate"],
                       "backing_hit_rate": at["backing_hit_rate"],
                       "recommended_cache_percentage": a["recommended"]["cache_percentage"],
                       "recommended_hit_rate": a["recommended"]["hit_rate"],
                       "recommended_gpu_bytes": a["recommended"]["gpu_bytes"], "note": a["note"]}
    return {"tables": sim, "target_hit_rate": 0.95, "batches": len(batches),
            "method": "tiemb advise: the GPU engine's cache policy simulated on the CPU over the test "
                      "data, hits counted after the first half of the batches (few batches understate a "
                      "warm server's hit rate)"}


def make_report(*, model: Model, device: str, source: str, timed: Dict[str, np.ndarray], timing: dict,
                accuracy: dict, rewrite, cache: dict, settings: Settings, inferred, notes: List[str]) \
        -> OptimizedReport:
    """The report: seed 000's fields from ``timing`` and ``timed`` (the
    timed batch), and ours (see :mod:`tiemb.report`)."""
    from .analyse import SIZE_MEANING

    return OptimizedReport(
        software_environment=software_environment(),
        hardware_environment=hardware_environment(device),
        test_data_info={"test_data_source": source,
                        "test_data_shape": ", ".join(f"{n}: {tuple(v.shape)}" for n, v in timed.items()),
                        "test_data_type": ", ".join(f"{n}: {v.dtype}" for n, v in timed.items())},
        optimization_result=optimization_result(timing["baseline"]["median_ms"], timing["optimized"]["median_ms"],
                                                timing["batch"]),
        timing=timing,
        accuracy=accuracy,
        rewrite={k: v for k, v in rewrite.as_dict().items() if k != "dense"},
        dense_backend=rewrite.dense,
        cache=cache,
        config={"values": settings.as_dict(), "inferred": inferred, "saved_as": "tiemb_config.json in the table store",
                "meaning": SIZE_MEANING},
        notes=notes + ([rewrite.note] if rewrite.note else []))
