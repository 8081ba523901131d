"""The table store: the tables an optimized model's lookups read, one file per
table, described by one versioned file, ``store.json`` (format 3).

The description carries everything the engines need: the tables (name, file,
rows, dim, dtype, size and CRC32C of each file), the engine sizes
(``max_batch_size``, ``slot_num``, ``max_nnz``), the tiers
(``cache_percentage``, ``cpu_cache_percentage``, ``hit_rate_threshold``), a
random content id (the store's identity), for a store published to a Redis
Cluster the ``distributed`` object (namespace, model, settings, per table its
content version and host tier: see :func:`write_distributed`), and its own
CRC32C. This module
writes it; the C++ core (``csrc/core/table_store.cc``) is its one reader, and
every description is checked by that reader before it replaces the old one.
Stores of older formats (``manifest.txt``) are refused at load with a message
saying to re-optimize the model.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from typing import Mapping, Optional

import numpy as np

from . import _C

DESCRIPTION = "store.json"
FORMAT_VERSION = _C.STORE_FORMAT_VERSION
# The tier settings a store carries, by their tiemb/* parameter names' tails.
TIER_KEYS = ("cache_percentage", "cpu_cache_percentage", "hit_rate_threshold")
_CHECKSUM_PLACEHOLDER = '"checksum": "00000000"'


def write_store(directory: str, tables: Mapping[str, np.ndarray], *, max_batch_size: int, slot_num: int,
                max_nnz: int, tiers: Optional[Mapping[str, float]] = None) -> None:
    """Writes a table store: one table file per entry of ``tables`` and the
    description ``store.json``.

    Args:
        directory: created if missing; the files in it are replaced.
        tables: table name (a plain file name) -> 2-D float32/float16 array.
            Each table file carries its CRC32C, which the description repeats.
        max_batch_size, slot_num, max_nnz: the engine sizes every op reading
            the store runs with (see :class:`tiemb.EngineConfig`): samples per
            call, features per op, ids per sample and slot.
        tiers: the store's tiers (see :func:`write_tiers`); None = the
            tiemb/* parameters' defaults.

    The store gets a new random content id: engines are cached per store path
    and content id, so a directory replaced by another store is never served
    by the engine of the one it replaced.
    """
    os.makedirs(directory, exist_ok=True)
    entries = []
    for name, table in tables.items():
        if not isinstance(name, str) or not name or "/" in name or name in (DESCRIPTION, "manifest.txt"):
            raise ValueError(f"table name must be a plain file name, got {name!r}")
        if not isinstance(table, np.ndarray) or table.dtype not in (np.float32, np.float16) or table.ndim != 2:
            raise ValueError(f"table {name!r} must be a 2-D float32 or float16 numpy array")
        path = os.path.join(directory, name)
        checksum = _C.write_table_file(path, np.ascontiguousarray(table))
        entries.append({"name": name, "file": name, "rows": int(table.shape[0]), "dim": int(table.shape[1]),
                        "dtype": table.dtype.name, "checksum": f"{checksum:08x}", "bytes": os.path.getsize(path)})
    sizes = {"max_batch_size": max_batch_size, "slot_num": slot_num, "max_nnz": max_nnz}
    _write_description(directory, sizes, entries, _tier_values(tiers) if tiers is not None else None)


def write_distributed(directory: str, distributed: Mapping[str, object],
                      host_tiers: Mapping[str, tuple]) -> None:
    """Records that the store's tables live in a Redis Cluster, and keeps only
    their host tier on disk.

    Args:
        directory: an existing store.
        distributed: ``namespace``, ``model``, ``cpu_cache_percentage``,
            ``settings`` (``address``, ``timeout_ms``, ``retries``,
            ``refresh_seconds``) and ``tables``: per table name its
            ``version`` and ``block_rows`` in the cluster.
        host_tiers: per table of ``distributed["tables"]``, ``(ids, rows)``:
            the host tier's row ids (int64, hottest first, at least one, a
            table file holds at least one row) and those rows.

    Each such table's file is replaced by ``<name>.host`` (the host rows, a
    table file) and ``<name>.host.i64`` (the ids, raw little-endian int64);
    its entry keeps the table's full row count. The description is replaced
    atomically with a new content id, then the files it no longer names (the
    full table files, the layout before store.json recorded the cluster:
    ``distributed.json`` and ``distributed/``) are removed.
    """
    d = read_store(directory)
    entries = _entries(d)
    by_name = {e["name"]: e for e in entries}
    tables = []
    for name, where in distributed["tables"].items():
        if name not in by_name:
            raise ValueError(f"distributed table {name!r} is not a table of the store {directory}")
        ids, rows = host_tiers[name]
        ids = np.ascontiguousarray(ids, dtype="<i8")
        rows = np.ascontiguousarray(rows)
        e = by_name[name]
        if ids.ndim != 1 or not 1 <= ids.size <= e["rows"] or rows.shape != (ids.size, e["dim"]) \
                or rows.dtype.name != e["dtype"]:
            raise ValueError(f"distributed table {name!r}: host tier must be 1 to {e['rows']} ids and their "
                             f"{e['dim']}-wide {e['dtype']} rows, got ids {ids.shape}, rows {rows.shape} {rows.dtype}")
        file = f"{name}.host"
        checksum = _C.write_table_file(os.path.join(directory, file), rows)
        ids_file = file + ".i64"
        _write_atomic(os.path.join(directory, ids_file), ids.tobytes())
        e.update(file=file, checksum=f"{checksum:08x}", bytes=os.path.getsize(os.path.join(directory, file)))
        tables.append({"name": name, "version": where["version"], "block_rows": int(where["block_rows"]),
                       "host_rows": int(ids.size), "host_ids": ids_file,
                       "host_ids_checksum": f"{_C.crc32c(ids.tobytes()):08x}"})
    s = distributed["settings"]
    doc = {"namespace": distributed["namespace"], "model": distributed["model"],
           "cpu_cache_percentage": float(distributed["cpu_cache_percentage"]),
           "settings": {"address": s["address"], "timeout_ms": int(s["timeout_ms"]), "retries": int(s["retries"]),
                        "refresh_seconds": float(s["refresh_seconds"])},
           "tables": tables}
    sizes = {k: d[k] for k in ("max_batch_size", "slot_num", "max_nnz")}
    _write_description(directory, sizes, entries, _stored_tiers(directory), doc)
    named = {e["file"] for e in entries} | {t["host_ids"] for t in tables}
    for old in set(d["files"]) - named:
        if os.path.isfile(os.path.join(directory, old)):
            os.remove(os.path.join(directory, old))
    _remove_old_distributed_layout(directory)


def _remove_old_distributed_layout(directory: str) -> None:
    legacy = os.path.join(directory, "distributed")
    if os.path.isfile(os.path.join(directory, "distributed.json")):
        os.remove(os.path.join(directory, "distributed.json"))
    if os.path.isdir(legacy):
        for f in os.listdir(legacy):
            if f == "remote.txt" or f.endswith(".host.i64"):
                os.remove(os.path.join(legacy, f))
        if not os.listdir(legacy):
            os.rmdir(legacy)


def _write_atomic(path: str, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_store(directory: str) -> dict:
    """The checked description of the store at ``directory``: a dict with
    ``max_batch_size``, ``slot_num``, ``max_nnz``, ``tables`` (names in
    table-id order), ``files``, ``rows``, ``dims``, ``dtypes``,
    ``checksums``, ``file_bytes``, ``content_id`` and ``tiers`` (every tier
    setting, defaults filled in). Raises ValueError naming the file and field
    (and, for an older store, saying to re-optimize)."""
    return _C.read_store_manifest(os.fspath(directory))


def resize_store(directory: str, *, max_batch_size: int, slot_num: int, max_nnz: int) -> None:
    """Rewrites a store's engine sizes, keeping its tables (files and
    checksums) and tiers. The store gets a new content id: an engine built
    with the old sizes must not serve it."""
    d = read_store(directory)
    sizes = {"max_batch_size": max_batch_size, "slot_num": slot_num, "max_nnz": max_nnz}
    _write_description(directory, sizes, _entries(d), _stored_tiers(directory), d.get("distributed"))


def write_tiers(directory: str, tiers: Mapping[str, float]) -> None:
    """Sets the store's tiers, keeping its tables and sizes; the description
    is replaced atomically (readers see the old one or the new one).

    Args:
        directory: an existing store.
        tiers: any of ``cache_percentage`` (share of each table's rows in the
            GPU cache, (0, 1]), ``cpu_cache_percentage`` (share in pinned host
            memory, [0, 1]; the rest is read from the table file) and
            ``hit_rate_threshold`` ([0, 1]), with or without the ``tiemb/``
            prefix. Keys not given keep their stored value. Unknown keys are
            an error naming them.

    The store gets a new content id: an engine built with the old tiers must
    not serve it.
    """
    d = read_store(directory)
    merged = dict(_stored_tiers(directory) or {})
    merged.update(_tier_values(tiers))
    sizes = {k: d[k] for k in ("max_batch_size", "slot_num", "max_nnz")}
    _write_description(directory, sizes, _entries(d), merged, d.get("distributed"))


def tiers_from_parameters(params: Mapping[str, object]) -> dict:
    """The tier settings among resolved ``tiemb/*`` parameters (others
    ignored; None values left out): what :func:`write_tiers` takes."""
    return {k: params[f"tiemb/{k}"] for k in TIER_KEYS if params.get(f"tiemb/{k}") is not None}


def check_store(directory: str) -> list:
    """Every problem of the table store at ``directory`` (description missing,
    damaged or of an older format; table files missing, of the wrong size or
    shape, or whose CRC32C does not match), one message per problem naming
    the file; ``[]`` when it is sound. Reads every byte of every table."""
    return list(_C.check_store(os.fspath(directory)))


def is_store(directory: str) -> bool:
    """True when ``directory`` holds a store description (of any format, so
    that an old store reaches the reader and its message)."""
    return any(os.path.isfile(os.path.join(directory, f)) for f in (DESCRIPTION, "manifest.txt"))


def _tier_values(tiers: Mapping[str, float]) -> dict:
    if not isinstance(tiers, Mapping):
        raise ValueError(f"tiers must be a dict of {', '.join(TIER_KEYS)}, got {type(tiers).__name__}")
    out = {}
    for key, value in tiers.items():
        short = key[len("tiemb/"):] if isinstance(key, str) and key.startswith("tiemb/") else key
        if short not in TIER_KEYS:
            raise ValueError(f"tiers: unknown key {key!r} (a store's tiers are {', '.join(TIER_KEYS)})")
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"tiers: {key} must be a number, got {value!r}")
        out[short] = float(value)
    return out


def _stored_tiers(directory: str) -> Optional[dict]:
    """The tiers as written (None when the description has none: defaults)."""
    with open(os.path.join(directory, DESCRIPTION), encoding="utf-8") as f:
        return json.load(f).get("tiers")


def _entries(d: dict) -> list:
    return [{"name": n, "file": f, "rows": r, "dim": m, "dtype": t, "checksum": f"{c:08x}", "bytes": b}
            for n, f, r, m, t, c, b in zip(d["tables"], d["files"], d["rows"], d["dims"], d["dtypes"],
                                           d["checksums"], d["file_bytes"])]


def _write_description(directory: str, sizes: dict, tables: list, tiers: Optional[dict],
                       distributed: Optional[dict] = None) -> None:
    """Checks the description with the engines' own reader, then replaces
    store.json atomically (written beside it, flushed, renamed)."""
    doc = {"format": "tiemb-store", "version": FORMAT_VERSION, "content_id": uuid.uuid4().hex, "sizes": sizes,
           "tables": tables}
    if tiers is not None:
        doc["tiers"] = tiers
    if distributed is not None:
        doc["distributed"] = distributed
    doc["checksum"] = "00000000"
    text = json.dumps(doc, indent=2) + "\n"
    crc = _C.crc32c(text.encode("utf-8"))
    # The description's own checksum is its last field (a table's may read the same).
    head, _, tail = text.rpartition(_CHECKSUM_PLACEHOLDER)
    text = f'{head}"checksum": "{crc:08x}"{tail}'
    path = os.path.join(directory, DESCRIPTION)
    _C.parse_store_description(text, path)   # raises ValueError naming the field
    _write_atomic(path, text.encode("utf-8"))
