"""Cache-sizing advisor: hit rate and GPU memory against ``cache_percentage``.

The GPU cache of a tiered table is simulated on the CPU by the engine's own
rules (``csrc/core/cache_sim.h``: same set count, set hash, 32 ways, warm
start, per-batch dedup, LRU by batch stamps, inserts after the batch), over a
sample of real traffic.

Traffic file (``.npz``), for a table store (keys are table names: the file
name in the store, with or without its extension):

* ``TABLE``: a 2-D integer array, one row per batch (its ids), or a 1-D array
  split into batches of ``batch_ids`` ids;
* ``K/TABLE`` (``K`` = 0, 1, ...): batch ``K`` of ``TABLE``, any shape.

For a model, the keys are the model's input names (``INPUT`` for one batch,
``K/INPUT`` for batch ``K``; any dtype and shape), i.e. the same feed dicts
as ``optimize()``'s ``test_data``; the model's own graph turns them into ids
per table.

Ids must lie in [0, rows) of their table; -1 marks padding and is skipped.

Example::

    rep = tiemb.advise.advise_store("model.pb.tiemb", tiemb.advise.load_traffic("traffic.npz"))
    print(tiemb.advise.format_table(rep))
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _C
from .config import PARAMETERS
from .store import is_store

#: The cache_percentage settings each table is simulated at.
GRID = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
WAYS = 32
_BATCH_KEY = re.compile(r"^(\d+)/(.+)$")


class AdviseError(ValueError):
    """Bad advisor input (traffic file, table names, ids); the message names it."""


@dataclass(frozen=True)
class TableInfo:
    """One table as the advisor sees it."""

    name: str
    rows: int
    dim: int
    dtype: str = "float32"

    @property
    def row_bytes(self) -> int:
        return self.dim * (2 if self.dtype == "float16" else 4)


# ----------------------------------------------------------------- traffic

def load_traffic(path: str, batch_ids: int = 4096, feeds: bool = False) -> Dict[str, List[np.ndarray]]:
    """name -> list of 1-D int64 batches, from a traffic ``.npz`` (layout in the module docstring).

    Args:
        path: the ``.npz`` file.
        batch_ids: batch length for 1-D arrays given whole.
        feeds: model inputs instead of ids: any dtype and shape kept, an
            array given whole is one batch.
    """
    if not os.path.isfile(path):
        raise AdviseError(f"traffic file {path} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises several kinds for a bad file
        raise AdviseError(f"traffic file {path} is not a readable .npz: {e}") from None
    with data:
        if not data.files:
            raise AdviseError(f"traffic file {path} holds no arrays")
        per: Dict[str, Dict[int, np.ndarray]] = {}
        whole: Dict[str, np.ndarray] = {}
        for key in data.files:
            arr = data[key]
            if not feeds and not np.issubdtype(arr.dtype, np.integer):
                raise AdviseError(f"traffic file {path}: array '{key}' must hold integer ids, got {arr.dtype}")
            m = _BATCH_KEY.match(key)
            if m:
                per.setdefault(m.group(2), {})[int(m.group(1))] = arr
            else:
                whole[key] = arr
    out: Dict[str, List[np.ndarray]] = {}
    for name, arr in whole.items():
        if name in per:
            raise AdviseError(f"traffic file {path}: '{name}' is given both whole and as numbered batches")
        if feeds:
            out[name] = [arr]
        elif arr.ndim == 2:
            out[name] = [np.ascontiguousarray(r, dtype=np.int64) for r in arr]
        else:
            flat = arr.astype(np.int64).ravel()
            out[name] = [flat[i:i + batch_ids] for i in range(0, flat.size, batch_ids)]
    for name, batches in per.items():
        out[name] = [batches[k] if feeds else np.ascontiguousarray(batches[k], dtype=np.int64).ravel()
                     for k in sorted(batches)]
    for name, batches in out.items():
        if not batches or sum(b.size for b in batches) == 0:
            raise AdviseError(f"traffic file {path}: '{name}' holds no ids")
    return out


def _checked(table: TableInfo, batches: Sequence[np.ndarray], source: str) -> List[np.ndarray]:
    out = []
    for k, b in enumerate(batches):
        b = np.asarray(b, dtype=np.int64).ravel()
        bad = (b >= table.rows) | (b < -1)
        if bad.any():
            raise AdviseError(f"{source}: table '{table.name}' has {table.rows} rows, but batch {k} holds id "
                              f"{int(b[bad][0])} ({int(bad.sum())} ids outside [0, {table.rows}); -1 is padding)")
        out.append(b)
    if not out or sum(b.size for b in out) == 0:
        raise AdviseError(f"{source}: no ids for table '{table.name}'")
    return out


# ----------------------------------------------------------------- simulation

def simulate(table: TableInfo, batches: Sequence[np.ndarray], cache_percentage: float,
             cpu_cache_percentage: float = 1.0, profile_ids=None, policy: str = "lru", warmup: int = 0) -> dict:
    """Counters of the GPU cache of ``table`` over ``batches`` (see ``_C.simulate_cache``)
    plus ``hit_rate`` (GPU cache), ``host_hit_rate`` and ``backing_hit_rate``
    (shares of unique ids per batch served by each tier).

    Args:
        cache_percentage, cpu_cache_percentage: the tier sizes (``TierConfig``'s).
        profile_ids: ids whose frequencies pick the warm rows (``add_table``'s
            ``profile_ids``); None: the first rows, as a table store's engine does.
        policy: ``"lru"`` (the engine's), or ``"lfu"`` / ``"lru_admit"`` to compare.
        warmup: batches run before counting starts (the cache's steady state).
    """
    batches = [np.asarray(b, dtype=np.int64).ravel() for b in batches]
    ids = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    offsets = np.zeros(len(batches) + 1, np.int64)
    np.cumsum([np.asarray(b).size for b in batches], out=offsets[1:])
    prof = None if profile_ids is None else np.ascontiguousarray(profile_ids, dtype=np.int64).ravel()
    c = _C.simulate_cache(int(table.rows), float(cache_percentage), float(cpu_cache_percentage), prof, ids,
                          offsets, policy, int(warmup))
    u = max(c["unique_ids"], 1)
    c["hit_rate"] = c["hits"] / u
    c["host_hit_rate"] = c["host_hits"] / u
    c["backing_hit_rate"] = c["backing_reads"] / u
    return c


def gpu_bytes(table: TableInfo, cache_percentage: float, cpu_cache_percentage: float = 1.0,
              max_ids: int = 4096) -> dict:
    """GPU memory a table takes at a setting, as the engine allocates it
    (csrc/cuda/detail/gpu_table.cu, tiered_batch.cu), for one slot of at most ``max_ids`` ids per call
    (``max_batch_size * max_nnz``): ``cache`` (rows, keys, stamps, set locks,
    host index), ``staging`` (per-call scratch), ``total``."""
    rb = table.row_bytes
    sizes = _C.tier_sizes(int(table.rows), float(cache_percentage), float(cpu_cache_percentage))
    if sizes["resident"]:
        return {"cache": table.rows * rb, "staging": 0, "total": table.rows * rb, "gpu_rows": table.rows}
    slots = sizes["gpu_rows"]
    cache = slots * (rb + 8 + 4) + sizes["cache_sets"] * 4 + 64
    if sizes["host_rows"] < table.rows:
        cache += table.rows * 4
    m = max(int(max_ids), 1)
    cap = 32
    while cap < 2 * m:
        cap <<= 1
    host_fetch = sizes["file_rows"] > 0
    # hash keys and staging rows by hash slot; miss and host lists; the slot's
    # unique-index buffer; two sets of pending inserts; host-fetched rows.
    staging = cap * 8 + cap * rb + m * 4 + m * 16 + m * 4 + 2 * (m * 8 + m * rb + 8) + (m * rb if host_fetch else 0)
    return {"cache": cache, "staging": staging, "total": cache + staging, "gpu_rows": slots}


def advise_table(table: TableInfo, batches: Sequence[np.ndarray], target_hit_rate: float = 0.95,
                 cpu_cache_percentage: float = 1.0, profile_ids=None, max_ids: int = 4096,
                 grid: Sequence[float] = GRID, source: str = "traffic", warmup: Optional[int] = None,
                 configured: Optional[float] = None, compare_policies: bool = False) -> dict:
    """The advice for one table: ``curve`` (per ``cache_percentage`` of ``grid``:
    the simulated hit rates per tier and the GPU bytes) and ``recommended``
    (the smallest ``cache_percentage`` whose GPU hit rate reaches
    ``target_hit_rate``, refined between grid points; 1.0 = resident, also
    when that setting would take no less GPU memory than the whole table,
    with ``note`` saying so).

    Args:
        target_hit_rate: in (0, 1].
        cpu_cache_percentage: host tier share (rows beyond it are backing-file reads).
        profile_ids: warm-start profile (see :func:`simulate`).
        max_ids: ids per call, for the staging size.
        source: names the traffic in error messages.
        warmup: batches that warm the cache before hits are counted; None:
            the first half (a server runs warm; a cold cache's first misses
            would understate its hit rate).
        configured: a cache_percentage in use (the store's or the default);
            its simulated point is returned as ``configured``.
        compare_policies: also simulate LFU and LRU with an admission filter
            (not the engine's policies) at every grid point:
            ``policy_hit_rates`` per point.
    """
    if not 0.0 < target_hit_rate <= 1.0:
        raise AdviseError(f"target_hit_rate must be in (0, 1], got {target_hit_rate}")
    batches = _checked(table, batches, source)
    if warmup is None:
        warmup = len(batches) // 2
    curve = []
    for p in grid:
        c = simulate(table, batches, p, cpu_cache_percentage, profile_ids, warmup=warmup)
        curve.append({"cache_percentage": p, "hit_rate": c["hit_rate"], "host_hit_rate": c["host_hit_rate"],
                      "backing_hit_rate": c["backing_hit_rate"],
                      "gpu_bytes": gpu_bytes(table, p, cpu_cache_percentage, max_ids)["total"]})
        if compare_policies:
            curve[-1]["policy_hit_rates"] = {
                pol: simulate(table, batches, p, cpu_cache_percentage, profile_ids, pol, warmup)["hit_rate"]
                for pol in ("lfu", "lru_admit")}
    first = next((i for i, pt in enumerate(curve) if pt["hit_rate"] >= target_hit_rate), len(curve) - 1)
    lo = curve[first - 1]["cache_percentage"] if first > 0 else 0.0
    hi = curve[first]["cache_percentage"]
    best = curve[first]
    # Bisect between the last grid point below the target and the first at it
    # (the curve rises with the cache size, up to set-hash noise).
    for _ in range(6):
        mid = (lo + hi) / 2
        if mid <= 0 or hi - lo < 1.0 / max(table.rows, 1):
            break
        c = simulate(table, batches, mid, cpu_cache_percentage, profile_ids, warmup=warmup)
        if c["hit_rate"] >= target_hit_rate:
            hi = mid
            best = {"cache_percentage": mid, "hit_rate": c["hit_rate"], "host_hit_rate": c["host_hit_rate"],
                    "backing_hit_rate": c["backing_hit_rate"],
                    "gpu_bytes": gpu_bytes(table, mid, cpu_cache_percentage, max_ids)["total"]}
        else:
            lo = mid
    at = None
    if configured is not None:
        c = simulate(table, batches, configured, cpu_cache_percentage, profile_ids, warmup=warmup)
        at = {"cache_percentage": configured, "hit_rate": c["hit_rate"], "host_hit_rate": c["host_hit_rate"],
              "backing_hit_rate": c["backing_hit_rate"],
              "gpu_bytes": gpu_bytes(table, configured, cpu_cache_percentage, max_ids)["total"]}
    note = None
    if best["cache_percentage"] < 1.0 and best["gpu_bytes"] >= table.rows * table.row_bytes:
        # The cache's keys, stamps and per-call staging cost more than the rows it saves.
        note = (f"cache_percentage {best['cache_percentage']:.4f} would take {best['gpu_bytes']} bytes of GPU memory, "
                f"no less than the whole table ({table.rows * table.row_bytes}): keep it resident")
        best = curve[-1]
    return {"table": table.name, "rows": table.rows, "dim": table.dim, "dtype": table.dtype, "note": note,
            "batches": len(batches), "warmup_batches": warmup, "ids": int(sum(b.size for b in batches)),
            "target_hit_rate": target_hit_rate,
            "curve": curve, "recommended": best, "configured": at,
            "resident_bytes": table.rows * table.row_bytes}


# ----------------------------------------------------------------- stores and models

def store_tables(store: str) -> Tuple[List[TableInfo], dict]:
    """The tables of a table store and its settings as tiemb/* values (its
    tiers and sizes, from store.json)."""
    from .store import read_store

    manifest = read_store(store)
    tables = [TableInfo(name, int(rows), int(dim), str(dtype))
              for name, rows, dim, dtype in zip(manifest["tables"], manifest["rows"], manifest["dims"],
                                                manifest["dtypes"])]
    cfg = {f"tiemb/{k}": v for k, v in manifest["tiers"].items()}
    cfg["tiemb/max_batch_size"] = manifest["max_batch_size"]
    cfg["tiemb/max_nnz"] = manifest["max_nnz"]
    return tables, cfg


def _match(tables: Sequence[TableInfo], traffic: Dict[str, list], source: str) -> Dict[str, list]:
    """Traffic keyed by table names (a store's file name with or without extension)."""
    by = {}
    for t in tables:
        for key in (t.name, os.path.splitext(t.name)[0]):
            if key in traffic:
                by[t.name] = traffic[key]
    known = {t.name for t in tables} | {os.path.splitext(t.name)[0] for t in tables}
    unknown = sorted(set(traffic) - known)
    if unknown:
        raise AdviseError(f"{source}: {unknown} are not tables of this model/store; its tables are "
                          f"{sorted(t.name for t in tables)}")
    if not by:
        raise AdviseError(f"{source}: no traffic for any table ({sorted(t.name for t in tables)})")
    return by


def model_traffic(model, lookups: List[dict], batches: Sequence[Dict[str, np.ndarray]], graph_def=None) -> \
        Tuple[List[TableInfo], Dict[str, List[np.ndarray]]]:
    """Tables of a model's lookups and their ids on each feed dict (``graph_def``, the rewriter's graph where
    given, else the model's, computes them); ids a safe lookup prunes (< 0: padding) are not traffic."""
    from .pipeline.load import tensor_values

    tables: Dict[str, TableInfo] = {}
    names = []
    for lk in lookups:
        tables.setdefault(lk["table"], TableInfo(lk["table"], int(lk["rows"]), int(lk["dim"]), str(lk["dtype"])))
        if lk["ids"] not in names:
            names.append(lk["ids"])
    values = tensor_values(model, names, batches, graph_def) if names else []
    traffic: Dict[str, List[np.ndarray]] = {}
    for k, v in enumerate(values):
        per: Dict[str, list] = {}
        for lk in lookups:
            ids = np.asarray(v[lk["ids"]])
            if lk.get("id_width", -1) >= 0:        # a padded id matrix: the columns the slot reads
                first = max(lk["id_column"], 0)
                ids = ids[..., first:first + (lk["id_width"] or ids.shape[-1] - first)]
            elif lk.get("id_column", -1) >= 0 and ids.ndim == 2:
                ids = ids[:, lk["id_column"]]
            ids = ids.astype(np.int64).ravel()
            if lk["mode"] == "safe":
                ids = ids[ids >= 0]
            per.setdefault(lk["table"], []).append(ids)
        for name, parts in per.items():
            traffic.setdefault(name, []).append(np.concatenate(parts))
    return list(tables.values()), traffic


def _model_feeds(traffic: Dict[str, List[np.ndarray]], path: str) -> List[Dict[str, np.ndarray]]:
    counts = {len(v) for v in traffic.values()}
    if len(counts) != 1:
        raise AdviseError(f"{path}: every model input needs the same number of batches, got "
                          f"{ {k: len(v) for k, v in traffic.items()} }")
    return [{k: v[i] for k, v in traffic.items()} for i in range(counts.pop())]


def advise(model_or_store: str, traffic_path: str, target_hit_rate: float = 0.95,
           cpu_cache_percentage: Optional[float] = None, batch_ids: Optional[int] = None,
           compare_policies: bool = False) -> dict:
    """The advice for every table with traffic: ``{"source", "target_hit_rate", "tables": [...]}``.

    Args:
        model_or_store: a table store directory (``store.json`` inside) or a
            model (SavedModel directory, frozen ``.pb``) whose inputs the
            traffic file holds.
        traffic_path: the ``.npz`` (layout in the module docstring).
        target_hit_rate: GPU cache hit rate to reach.
        cpu_cache_percentage: host tier share; None: the store's config, else 1.
        batch_ids: batch length for 1-D arrays; None: the store's
            max_batch_size * max_nnz, else 4096.
        compare_policies: also LFU's and admission-filtered LRU's hit rates
            (simulated only; the engine is LRU).
    """
    if os.path.isdir(model_or_store) and is_store(model_or_store):
        tables, cfg = store_tables(model_or_store)
        max_ids = int(cfg["tiemb/max_batch_size"]) * int(cfg["tiemb/max_nnz"])
        traffic = _match(tables, load_traffic(traffic_path, batch_ids or max_ids), traffic_path)
        cpu = cpu_cache_percentage if cpu_cache_percentage is not None else \
            float(cfg.get("tiemb/cpu_cache_percentage", PARAMETERS["tiemb/cpu_cache_percentage"][1]))
        configured = float(cfg.get("tiemb/cache_percentage", PARAMETERS["tiemb/cache_percentage"][1]))
    else:
        from .pipeline.analyse import analyse
        from .pipeline.load import kind_of, load_model

        model = load_model(model_or_store, kind_of(model_or_store))
        rewritten, found = analyse(model)
        if not found.lookups:
            raise AdviseError(f"{model_or_store}: no embedding lookups found, nothing to advise")
        raw = load_traffic(traffic_path, batch_ids or 4096, feeds=True)
        missing = sorted(set(model.inputs) - set(raw))
        if missing:
            raise AdviseError(f"{traffic_path}: model inputs {missing} are missing (the model's inputs are "
                              f"{sorted(model.inputs)})")
        feeds = _model_feeds({k: raw[k] for k in model.inputs}, traffic_path)
        tables, traffic = model_traffic(model, found.lookups, feeds, rewritten)
        max_ids = max(sum(b.size for b in v[:1]) for v in traffic.values())
        cpu = 1.0 if cpu_cache_percentage is None else cpu_cache_percentage
        configured = PARAMETERS["tiemb/cache_percentage"][1]
    out = []
    for t in tables:
        if t.name in traffic:
            out.append(advise_table(t, traffic[t.name], target_hit_rate, cpu, max_ids=max_ids,
                                    source=traffic_path, configured=configured,
                                    compare_policies=compare_policies))
    return {"source": os.fspath(model_or_store), "traffic": os.fspath(traffic_path),
            "target_hit_rate": target_hit_rate, "cpu_cache_percentage": cpu, "max_ids_per_call": max_ids,
            "policy": "lru (the engine's), simulated on the CPU", "tables": out}


# ----------------------------------------------------------------- output

def _mib(b: int) -> str:
    return f"{b / 2**20:.1f}"


def format_table(report: dict) -> str:
    """The advice as text: per table, the hit-rate curve and the recommendation."""
    lines = [f"cache advice: {report['source']} on {report['traffic']} "
             f"(target GPU hit rate {report['target_hit_rate']:.1%}, {report['policy']})"]
    for t in report["tables"]:
        lines.append("")
        lines.append(f"table {t['table']}: {t['rows']} rows x {t['dim']} {t['dtype']}, {t['batches']} batches "
                     f"(hits counted after the first {t['warmup_batches']}), {t['ids']} ids; "
                     f"resident {_mib(t['resident_bytes'])} MiB")
        pols = "policy_hit_rates" in t["curve"][0]
        lines.append(f"  {'cache_%':>8} {'gpu hit':>8} {'host hit':>9} {'backing':>8} {'GPU MiB':>9}"
                     + (f" {'lfu hit':>8} {'lru+adm':>8}" if pols else ""))
        for pt in t["curve"]:
            lines.append(f"  {pt['cache_percentage']:>8.3f} {pt['hit_rate']:>8.1%} {pt['host_hit_rate']:>9.1%} "
                         f"{pt['backing_hit_rate']:>8.1%} {_mib(pt['gpu_bytes']):>9}"
                         + (f" {pt['policy_hit_rates']['lfu']:>8.1%} {pt['policy_hit_rates']['lru_admit']:>8.1%}"
                            if pols else ""))
        if t.get("configured"):
            c = t["configured"]
            lines.append(f"  configured cache_percentage {c['cache_percentage']:.4f}: hit rate {c['hit_rate']:.1%}, "
                         f"{_mib(c['gpu_bytes'])} MiB of GPU memory")
        r = t["recommended"]
        reached = r["hit_rate"] >= t["target_hit_rate"]
        lines.append(f"  recommended cache_percentage {r['cache_percentage']:.4f}: hit rate {r['hit_rate']:.1%}, "
                     f"{_mib(r['gpu_bytes'])} MiB of GPU memory"
                     + ("" if reached else " (target not reached below resident)"))
        if t.get("note"):
            lines.append(f"  ({t['note']})")
    return "\n".join(lines)


def plot(report: dict, path: str) -> None:
    """Hit rate against cache_percentage per table (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AdviseError("--plot needs matplotlib (pip install matplotlib)") from None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in report["tables"]:
        xs = [p["cache_percentage"] for p in t["curve"]]
        ax.plot(xs, [p["hit_rate"] for p in t["curve"]], marker="o", ms=3, label=t["table"])
    ax.axhline(report["target_hit_rate"], color="grey", ls="--", lw=1, label="target")
    ax.set_xscale("log")
    ax.set_xlabel("cache_percentage (share of rows in the GPU cache)")
    ax.set_ylabel("GPU cache hit rate (simulated, LRU)")
    ax.set_title("tiemb advise")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
