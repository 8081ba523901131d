"""Tables into the cluster: publish (idempotent, resumable), update (a new
version layered over the current one), and the layout a reader resolves.

Keys, for table ``T`` of model ``M`` in namespace ``NS``::

    NS:M:T:current          the version served (switched last, atomically)
    NS:M:T:<v>:meta         "tiemb-meta 1" then one "key value" line each:
                            rows, dim, dtype, block_rows, base (the version
                            it layers over, or -), changed (comma-separated
                            blocks this layer holds; - for a base version).
                            Read by Python and C++ (csrc/distributed/remote_store.cc).
    NS:M:T:<v>:b<k>         rows [k*block_rows, (k+1)*block_rows), raw bytes

A version is a content hash (the table's bytes, or the parent version and
the update's ids and rows), so publishing the same table again finds its
meta key and writes nothing; a publish that stopped half-way finds the
blocks it wrote and writes only the others. The meta key is written after
every block and ``current`` after the meta, so a reader never finds a
version that is not whole.
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .settings import DEFAULT_BLOCK_ROWS

#: Values per pipelined batch: bounds the memory of one batch on both sides.
_BATCH_VALUES = 2048
_DTYPE_CODES = {"float32": 0, "float16": 1}  # tiemb::dtype (csrc/core/types.h); keep in sync


class DistributedError(ValueError):
    """A table or version missing from the cluster, or a bad publish/update."""


def table_key(namespace: str, model: str, table: str) -> str:
    for what, v in (("model", model), ("table", table)):
        if not v or any(c in v for c in "{}: \n"):
            raise DistributedError(f"distributed {what} name must be non-empty without '{{', '}}', ':' or spaces, "
                                   f"got {v!r}")
    return f"{namespace}:{model}:{table}"


def content_version(table: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{table.dtype.name}:{table.shape[0]}x{table.shape[1]}:".encode())
    h.update(np.ascontiguousarray(table).data)
    return h.hexdigest()


def _blocks(rows: int, block_rows: int) -> int:
    return (rows + block_rows - 1) // block_rows


def publish_table(client, namespace: str, model: str, name: str, table: np.ndarray,
                  block_rows: int = DEFAULT_BLOCK_ROWS, make_current: bool = True) -> dict:
    """Writes ``table`` (rows x dim, float32/float16) to the cluster.

    Args:
        client: a ``tiemb._C.ClusterClient`` (:func:`tiemb.distributed.connect`).
        namespace, model, name: the key prefix ``namespace:model:name``.
        block_rows: rows per value (a miss reads one whole value).
        make_current: point ``current`` at this version (serving switches to it).

    Returns:
        ``{"version", "written_values", "skipped_values", "rows", "dim", "dtype", "block_rows"}``:
        nothing written when the version was already complete; with
        ``make_current``, also ``"current"``: the version served now, which
        stays an update of ``version`` where one was made since (republishing
        does not undo updates).
    """
    if not isinstance(table, np.ndarray) or table.ndim != 2 or table.dtype.name not in _DTYPE_CODES:
        raise DistributedError(f"table {name!r}: must be a 2-D float32 or float16 array")
    if isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1:
        raise DistributedError(f"block_rows must be a positive int, got {block_rows!r}")
    base = table_key(namespace, model, name)
    version = content_version(table)
    prefix = f"{base}:{version}"
    rows, dim = table.shape
    nblocks = _blocks(rows, block_rows)
    out = {"version": version, "written_values": 0, "skipped_values": 0, "rows": rows, "dim": dim,
           "dtype": table.dtype.name, "block_rows": block_rows}
    meta = client.run([["GET", f"{prefix}:meta"]])[0]
    if meta is None:
        table = np.ascontiguousarray(table)
        for first in range(0, nblocks, _BATCH_VALUES):
            ks = range(first, min(nblocks, first + _BATCH_VALUES))
            present = client.run([["EXISTS", f"{prefix}:b{k}"] for k in ks])
            cmds = [["SET", f"{prefix}:b{k}", table[k * block_rows:(k + 1) * block_rows].tobytes()]
                    for k, p in zip(ks, present) if not p]
            if cmds:
                client.run(cmds)
            out["written_values"] += len(cmds)
            out["skipped_values"] += len(ks) - len(cmds)
        meta_doc = {"rows": rows, "dim": dim, "dtype": table.dtype.name, "block_rows": block_rows, "base": None,
                    "changed": None}
        client.run([["SET", f"{prefix}:meta", _meta_text(meta_doc)]])
    else:
        out["skipped_values"] = nblocks
    if make_current:
        out["current"] = _switch_to_published(client, namespace, model, name, version)
    return out


def _switch_to_published(client, namespace: str, model: str, name: str, version: str) -> str:
    """Points ``current`` at ``version`` unless ``current`` is an update
    layered (directly or not) over it: republishing a store must not undo the
    updates made since it was published. Returns the version now current."""
    key = f"{table_key(namespace, model, name)}:current"
    raw = client.run([["GET", key]])[0]
    current = None if raw is None else raw.decode()
    if current is not None and current != version:
        try:
            chain = [v for v, _ in _version_chain(client, namespace, model, name, current)]
        except DistributedError:  # an unreadable chain is no update of this version
            chain = []
        if version in chain:
            return current
    client.run([["SET", key, version]])
    return version


def _meta_text(meta: dict) -> str:
    changed = "-" if meta["changed"] is None else ",".join(str(int(k)) for k in meta["changed"])
    return (f"tiemb-meta 1\nrows {meta['rows']}\ndim {meta['dim']}\ndtype {meta['dtype']}\n"
            f"block_rows {meta['block_rows']}\nbase {meta['base'] or '-'}\nchanged {changed}\n")


def _parse_meta(raw: bytes, key: str) -> dict:
    lines = raw.decode(errors="replace").splitlines()
    if not lines or lines[0] != "tiemb-meta 1":
        raise DistributedError(f"key {key!r}: not a tiemb table version (no 'tiemb-meta 1' header)")
    kv = dict(line.split(" ", 1) for line in lines[1:] if " " in line)
    try:
        return {"rows": int(kv["rows"]), "dim": int(kv["dim"]), "dtype": kv["dtype"],
                "block_rows": int(kv["block_rows"]), "base": None if kv["base"] == "-" else kv["base"],
                "changed": None if kv["changed"] == "-" else [int(k) for k in kv["changed"].split(",") if k]}
    except (KeyError, ValueError) as e:
        raise DistributedError(f"key {key!r}: damaged version metadata ({e})") from None


def _get(client, key: str, missing: str) -> bytes:
    """The value of ``key``; DistributedError "<missing> (key ... missing): ..." where it is absent."""
    raw = client.run([["GET", key]])[0]
    if raw is None:
        raise DistributedError(f"{missing} (key {key!r} missing): publish the store (tiemb publish STORE --address "
                               "...) or check tiemb/distributed_namespace")
    return raw


def read_meta(client, namespace: str, model: str, name: str, version: str) -> dict:
    key = f"{table_key(namespace, model, name)}:{version}:meta"
    raw = _get(client, key, f"distributed table {name!r}: version {version} is not in the cluster (namespace "
                            f"{namespace!r}, model {model!r})")
    return _parse_meta(raw, key)


def current_version(client, namespace: str, model: str, name: str) -> str:
    return _get(client, f"{table_key(namespace, model, name)}:current",
                f"distributed table {name!r}: not published in namespace {namespace!r} for model {model!r}").decode()


def resolve_layout(client, namespace: str, model: str, name: str, version: str) -> dict:
    """The layers of ``version`` (oldest first, key prefixes) and per block
    the layer that holds it: what ``tiemb._C.RemoteTable`` reads."""
    chain = _version_chain(client, namespace, model, name, version)
    root = chain[0][1]
    nblocks = _blocks(root["rows"], root["block_rows"])
    block_layer = np.zeros(nblocks, dtype=np.uint16)
    for i, (_, meta) in enumerate(chain[1:], start=1):
        block_layer[np.asarray(meta["changed"], dtype=np.int64)] = i
    base = table_key(namespace, model, name)
    return {"version": version, "rows": root["rows"], "dim": root["dim"], "dtype": root["dtype"],
            "block_rows": root["block_rows"], "layers": [f"{base}:{v}" for v, _ in chain],
            "block_layer": block_layer}


def read_blocks(client, layout: dict, blocks: Sequence[int]) -> Dict[int, np.ndarray]:
    """Blocks of a layout as (rows, dim) arrays."""
    keys = [f"{layout['layers'][layout['block_layer'][k]]}:b{k}" for k in blocks]
    values = client.run([["GET", k] for k in keys]) if keys else []
    out = {}
    for k, key, v in zip(blocks, keys, values):
        if v is None:
            raise DistributedError(f"distributed table: key {key!r} is missing from the cluster (evicted under "
                                   "maxmemory, or never published)")
        out[k] = np.frombuffer(v, dtype=layout["dtype"]).reshape(-1, layout["dim"]).copy()
    return out


#: Compare-and-set of a table's ``current`` key: switches it to ARGV[2] only
#: while it still names ARGV[1]; 1 when it switched, 0 when another update won.
_SWITCH_SCRIPT = ("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 "
                  "else return 0 end")


#: Versions `tiemb update` keeps readable by default: the new one and the one
#: it replaces (still served by every process until its next refresh).
DEFAULT_KEEP_VERSIONS = 2


def update_table(client, namespace: str, model: str, name: str, ids: np.ndarray, rows: np.ndarray,
                 attempts: int = 20, keep_versions: Optional[int] = DEFAULT_KEEP_VERSIONS) -> dict:
    """Writes new values of rows ``ids`` as a new version layered over the
    current one, then makes it current. Serving processes switch at their
    next refresh. Returns ``{"version", "base", "changed_blocks", "ids",
    "attempts", "pruned"}``.

    Concurrent updates of one table (any processes, any hosts) lose nothing:
    ``current`` is switched by a compare-and-set (a Lua script on the key's
    node), so an update whose base version was replaced meanwhile builds its
    layer again over the new current version and tries again, up to
    ``attempts`` times (then DistributedError saying so). The blocks such an
    abandoned layer wrote stay in the cluster (its version was never served).

    Args:
        client: a cluster client (:func:`connect`).
        namespace, model, name: the table.
        ids: distinct row ids (1-D integers within the table).
        rows: (len(ids), dim) new rows, cast to the table's dtype.
        attempts: tries of the compare-and-set before giving up (>= 1).
        keep_versions: after the switch, :func:`prune_versions` with this
            ``keep`` (>= 2: the replaced version stays readable for the
            processes that have not refreshed yet); None keeps every version.
    """
    ids = np.asarray(ids)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DistributedError(f"update of {name!r}: ids must be a 1-D integer array, got {ids.dtype} {ids.shape}")
    if attempts < 1:
        raise DistributedError(f"update of {name!r}: attempts must be >= 1, got {attempts}")
    _check_keep(name, keep_versions)
    current_key = f"{table_key(namespace, model, name)}:current"
    for attempt in range(1, attempts + 1):
        base = current_version(client, namespace, model, name)
        try:
            out = _write_update(client, namespace, model, name, ids, rows, base)
        except DistributedError:
            # A concurrent update's pruning may have removed blocks of a base
            # that is no longer current: that is a lost race, not an error.
            if current_version(client, namespace, model, name) != base:
                continue
            raise
        if client.run([["EVAL", _SWITCH_SCRIPT, "1", current_key, out["base"], out["version"]]])[0] == 1:
            out["attempts"] = attempt
            out["pruned"] = 0 if keep_versions is None else \
                prune_versions(client, namespace, model, name, keep=keep_versions)["deleted"]
            return out
    raise DistributedError(f"update of {name!r}: the current version changed under this update {attempts} times "
                           "(other updates of the same table were switching it); nothing of this update is served, "
                           "run it again")


def _write_update(client, namespace: str, model: str, name: str, ids: np.ndarray, rows: np.ndarray,
                  base_version: str) -> dict:
    """Writes the layer of an update over ``base_version`` (not made current)."""
    layout = resolve_layout(client, namespace, model, name, base_version)
    rows = np.asarray(rows)
    if rows.shape != (ids.shape[0], layout["dim"]):
        raise DistributedError(f"update of {name!r}: rows must be ({ids.shape[0]}, {layout['dim']}) for "
                               f"{ids.shape[0]} ids, got {rows.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= layout["rows"]):
        bad = ids[(ids < 0) | (ids >= layout["rows"])][0]
        raise DistributedError(f"update of {name!r}: id {int(bad)} is out of range [0, {layout['rows']})")
    if len(np.unique(ids)) != ids.size:
        raise DistributedError(f"update of {name!r}: ids must be distinct")
    rows = rows.astype(layout["dtype"])
    h = hashlib.blake2b(digest_size=8)
    h.update(base_version.encode())
    h.update(ids.astype(np.int64).tobytes())
    h.update(rows.tobytes())
    version = h.hexdigest()
    br = layout["block_rows"]
    changed = sorted({int(i) // br for i in ids})
    prefix = f"{table_key(namespace, model, name)}:{version}"
    if client.run([["GET", f"{prefix}:meta"]])[0] is None:
        for first in range(0, len(changed), _BATCH_VALUES):
            part = changed[first:first + _BATCH_VALUES]
            blocks = read_blocks(client, layout, part)
            for i, r in zip(ids, rows):
                b = int(i) // br
                if b in blocks:
                    blocks[b][int(i) - b * br] = r
            client.run([["SET", f"{prefix}:b{k}", blocks[k].tobytes()] for k in part])
        meta = {"rows": layout["rows"], "dim": layout["dim"], "dtype": layout["dtype"], "block_rows": br,
                "base": base_version, "changed": changed}
        client.run([["SET", f"{prefix}:meta", _meta_text(meta)]])
    return {"version": version, "base": base_version, "changed_blocks": len(changed), "ids": int(ids.size)}


def _check_keep(name: str, keep) -> None:
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 2):
        raise DistributedError(f"table {name!r}: keep_versions must be an int >= 2 (the version an update replaces "
                               f"is served until every process refreshed) or None, got {keep!r}")


def _version_chain(client, namespace: str, model: str, name: str, version: str) -> List[Tuple[str, dict]]:
    """(version, meta) from the root to ``version``, oldest first."""
    chain: List[Tuple[str, dict]] = []
    v: Optional[str] = version
    while v is not None:
        meta = read_meta(client, namespace, model, name, v)
        chain.append((v, meta))
        v = meta["base"]
        if len(chain) > 60000:
            raise DistributedError(f"distributed table {name!r}: version chain too long at {v}")
    chain.reverse()
    return chain


def prune_versions(client, namespace: str, model: str, name: str, keep: int = DEFAULT_KEEP_VERSIONS,
                   sweep: bool = False) -> dict:
    """Deletes the blocks that only versions older than the last ``keep``
    reference; a block any of the last ``keep`` versions (the current one
    first) reads is never deleted, nor one of the published version (the
    root of the chain: the version a published store records, which ``tiemb
    publish STORE`` reads back). So the cluster holds at most the published
    table, the blocks the kept versions changed, and the metas. The
    versions' meta keys stay (the chain of metas is how a version's layout
    is resolved; a few hundred bytes each), so a pruned version still
    resolves but reading one of its deleted blocks is the "key missing"
    error.

    A version's layout maps each block to the newest layer holding it, and a
    new version maps a block to its base's layer or to its own: once no kept
    version references a layer's block, no later version will. So after
    every update only the version that just left the window needs checking
    (``sweep`` checks every older one: for a table updated with pruning off).

    Args:
        client, namespace, model, name: the table.
        keep: versions kept readable (>= 2).
        sweep: check every version older than the kept ones, not only the
            newest of them.

    Returns:
        ``{"deleted": blocks deleted, "kept": the kept versions, newest
        first, then the published one}``.
    """
    _check_keep(name, keep)
    chain = _version_chain(client, namespace, model, name, current_version(client, namespace, model, name))
    kept = [v for v, _ in chain[-keep:]][::-1] + ([chain[0][0]] if len(chain) > keep else [])
    if len(chain) <= keep + 1:  # nothing between the published version and the kept ones
        return {"deleted": 0, "kept": kept}
    root = chain[0][1]
    n, nblocks = len(chain), _blocks(root["rows"], root["block_rows"])

    def layouts():
        """(chain index, its block -> chain index) oldest first; one array, updated in place."""
        block_layer = np.zeros(nblocks, dtype=np.int64)
        for i, (_, meta) in enumerate(chain):
            if i > 0:
                block_layer[np.asarray(meta["changed"], dtype=np.int64)] = i
            yield i, block_layer

    kept_layouts = [bl.copy() for i, bl in layouts() if i == 0 or i >= n - keep]
    base = table_key(namespace, model, name)
    keys: Dict[str, None] = {}  # ordered and unique: with sweep, one block may leave with several versions
    for i, bl in layouts():
        if i >= n - keep:
            break
        if i == 0 or (not sweep and i != n - keep - 1):
            continue
        gone = np.ones(nblocks, dtype=bool)
        for kl in kept_layouts:
            gone &= kl != bl
        for b in np.flatnonzero(gone).tolist():
            keys[f"{base}:{chain[int(bl[b])][0]}:b{b}"] = None
    deleted = 0
    names = list(keys)
    for first in range(0, len(names), _BATCH_VALUES):
        deleted += sum(int(r) for r in client.run([["DEL", k] for k in names[first:first + _BATCH_VALUES]]))
    return {"deleted": deleted, "kept": kept}
