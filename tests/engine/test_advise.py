"""tiemb advise on a table store: the curve, the recommendation, the memory
sizes, and bad traffic files (errors that name the file, table and id)."""

import json

import numpy as np
import pytest

from tiemb import _C, advise, cli, tf_ops


def make_store(tmp_path, tables, max_batch=64, max_nnz=4):
    d = tmp_path / "store"
    tf_ops.write_store(str(d), {f"{name}.tbl": np.zeros((rows, dim), np.float32) for name, (rows, dim) in tables.items()},
                       max_batch_size=max_batch, slot_num=len(tables), max_nnz=max_nnz)
    return str(d)


def zipf_batches(rng, rows, n_batches, size, a=1.1):
    return [np.minimum(rng.zipf(a, size) - 1, rows - 1).astype(np.int64) for _ in range(n_batches)]


def test_curve_and_recommendation(tmp_path, seed):
    rng = np.random.default_rng(seed)
    store = make_store(tmp_path, {"users": (20_000, 16), "items": (5_000, 8)})
    users = np.stack(zipf_batches(rng, 20_000, 30, 256))
    items = [b for b in zipf_batches(rng, 5_000, 30, 100)]
    np.savez(tmp_path / "t.npz", users=users, **{f"{k}/items.tbl": b for k, b in enumerate(items)})
    rep = advise.advise(store, str(tmp_path / "t.npz"), target_hit_rate=0.8)
    by = {t["table"]: t for t in rep["tables"]}
    assert set(by) == {"users.tbl", "items.tbl"} and by["users.tbl"]["batches"] == 30
    assert by["users.tbl"]["warmup_batches"] == 15
    for t in by.values():
        rates = [p["hit_rate"] for p in t["curve"]]
        assert rates[-1] == 1.0                              # resident
        assert rates[0] < rates[-2]                          # more cache, more hits
        rec = t["recommended"]
        assert rec["hit_rate"] >= 0.8
        # The recommendation is the smallest grid point reaching the target, or below it.
        first = next(p for p in t["curve"] if p["hit_rate"] >= 0.8)
        assert rec["cache_percentage"] <= first["cache_percentage"]
        # Each point is the simulator at that setting.
        again = advise.simulate(advise.TableInfo(t["table"], t["rows"], t["dim"]),
                                users if t["table"] == "users.tbl" else items, rec["cache_percentage"], warmup=15)
        assert again["hit_rate"] == rec["hit_rate"]
    # Memory: cache rows + keys/stamps + set locks, and staging from max_batch * max_nnz = 256 ids.
    t = advise.TableInfo("users", 20_000, 16)
    b = advise.gpu_bytes(t, 0.1, 1.0, max_ids=256)
    sets = _C.tier_sizes(20_000, 0.1, 1.0)["cache_sets"]
    assert b["cache"] == sets * 32 * (64 + 12) + sets * 4 + 64
    assert b["staging"] == 512 * 8 + 512 * 64 + 256 * 24 + 2 * (256 * 8 + 256 * 64 + 8)
    assert advise.gpu_bytes(t, 1.0)["total"] == 20_000 * 64
    # The configured point: the default cache_percentage (the store's description has no tiers).
    assert by["users.tbl"]["configured"]["cache_percentage"] == 0.2
    assert by["users.tbl"]["configured"]["hit_rate"] == next(p["hit_rate"] for p in by["users.tbl"]["curve"]
                                                            if p["cache_percentage"] == 0.2)
    text = advise.format_table(rep)
    assert "table users.tbl: 20000 rows x 16 float32" in text and "recommended cache_percentage" in text
    assert "configured cache_percentage 0.2000" in text


def test_cli_writes_json_and_table(tmp_path, capsys, seed):
    rng = np.random.default_rng(seed)
    store = make_store(tmp_path, {"t": (3000, 4)})
    np.savez(tmp_path / "t.npz", t=np.concatenate(zipf_batches(rng, 3000, 10, 256)))  # 1-D: split by 64*4
    from tiemb import store as table_store

    table_store.write_tiers(store, {"tiemb/cache_percentage": 0.1})
    out = tmp_path / "advice.json"
    assert cli.main(["advise", store, "--traffic", str(tmp_path / "t.npz"), "--json", str(out), "--policies"]) == 0
    rep = json.loads(out.read_text())
    t = advise.TableInfo("t.tbl", 3000, 4)
    batches = advise.load_traffic(str(tmp_path / "t.npz"), 256)["t"]
    for pt in rep["tables"][0]["curve"][:3]:
        for pol in ("lfu", "lru_admit"):
            assert pt["policy_hit_rates"][pol] == advise.simulate(t, batches, pt["cache_percentage"], policy=pol,
                                                                  warmup=5)["hit_rate"]
    assert rep["tables"][0]["batches"] == 10 and rep["max_ids_per_call"] == 256
    assert rep["tables"][0]["configured"]["cache_percentage"] == 0.1  # the store's own setting
    printed = capsys.readouterr().out
    assert "recommended cache_percentage" in printed and "lfu hit" in printed


@pytest.mark.parametrize("arrays,msg", [
    ({"t": np.array([[1, 2], [3, 3000]])}, r"table 't.tbl' has 3000 rows, but batch 1 holds id 3000 \(1 ids outside"),
    ({"t": np.array([[1, -5]])}, r"batch 0 holds id -5"),
    ({"nope": np.array([[1]])}, r"\['nope'\] are not tables of this model/store; its tables are \['t.tbl'\]"),
    ({"t": np.zeros((0,), np.int64)}, r"'t' holds no ids"),
    ({"t": np.array([[0.5]])}, r"array 't' must hold integer ids, got float64"),
    ({}, r"holds no arrays"),
])
def test_bad_traffic(tmp_path, arrays, msg):
    store = make_store(tmp_path, {"t": (3000, 4)})
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(advise.AdviseError, match=msg):
        advise.advise(store, str(path))


def test_missing_and_unreadable_files(tmp_path, capsys):
    store = make_store(tmp_path, {"t": (10, 4)})
    with pytest.raises(advise.AdviseError, match="traffic file .*missing.npz does not exist"):
        advise.advise(store, str(tmp_path / "missing.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(advise.AdviseError, match="junk.npz is not a readable .npz"):
        advise.advise(store, str(tmp_path / "junk.npz"))
    np.savez(tmp_path / "ok.npz", t=np.array([[1]]))
    assert cli.main(["advise", store, "--traffic", str(tmp_path / "ok.npz"), "--target-hit-rate", "1.5"]) == 1
    assert "target_hit_rate must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_resident_when_the_cache_costs_more_than_the_table(tmp_path, seed):
    # 2000 rows x 4 floats = 32 kB; the staging for 256 ids per call alone is larger.
    rng = np.random.default_rng(seed)
    t = advise.TableInfo("small", 2000, 4)
    batches = zipf_batches(rng, 2000, 10, 256)
    rep = advise.advise_table(t, batches, target_hit_rate=0.5, max_ids=256)
    assert rep["recommended"]["cache_percentage"] == 1.0
    assert "keep it resident" in rep["note"] and "no less than the whole table (32000)" in rep["note"]
