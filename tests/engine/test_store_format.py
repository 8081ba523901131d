"""The table store's one description, store.json (format 3, issue 12 item 3):
written by tiemb.store, read by the C++ core's JSON parser; every field
checked with an error naming it; old stores refused with the fix."""

import json
import os

import numpy as np
import pytest

from tiemb import _C, store
from tiemb.config import PARAMETERS


def _write(tmp_path, **kw):
    d = str(tmp_path / "s")
    tables = {"a.tiemb": np.arange(12, dtype=np.float32).reshape(4, 3), "b.tiemb": np.ones((7, 2), np.float16)}
    store.write_store(d, tables, max_batch_size=8, slot_num=2, max_nnz=3, **kw)
    return d, tables


def _edit(d, change):
    """Rewrites store.json through `change(doc)` with a valid checksum, as a
    buggy or newer writer would: the reader must judge the content."""
    path = os.path.join(d, "store.json")
    doc = json.load(open(path))
    change(doc)
    doc["checksum"] = "00000000"
    text = json.dumps(doc, indent=2) + "\n"
    crc = _C.crc32c(text.encode())
    head, _, tail = text.rpartition('"checksum": "00000000"')
    open(path, "w").write(f'{head}"checksum": "{crc:08x}"{tail}')


def test_round_trip_carries_tables_sizes_and_tiers(tmp_path):
    d, tables = _write(tmp_path, tiers={"tiemb/cache_percentage": 0.5})
    got = store.read_store(d)
    assert got["tables"] == got["files"] == ["a.tiemb", "b.tiemb"]
    assert got["rows"] == [4, 7] and got["dims"] == [3, 2] and got["dtypes"] == ["float32", "float16"]
    assert (got["max_batch_size"], got["slot_num"], got["max_nnz"]) == (8, 2, 3)
    assert got["file_bytes"] == [os.path.getsize(os.path.join(d, f)) for f in got["files"]]
    assert got["tiers"] == {"cache_percentage": 0.5,
                            "cpu_cache_percentage": PARAMETERS["tiemb/cpu_cache_percentage"][1],
                            "hit_rate_threshold": PARAMETERS["tiemb/hit_rate_threshold"][1]}
    doc = json.load(open(os.path.join(d, "store.json")))
    assert doc["format"] == "tiemb-store" and doc["version"] == store.FORMAT_VERSION == 3
    assert sorted(os.listdir(d)) == ["a.tiemb", "b.tiemb", "store.json"]   # no manifest.txt, no tiemb_config.json
    assert store.check_store(d) == []
    # The engines read the same tables: the op's engine from Python equals the arrays written.
    e = _C.CpuEngine.from_store(d)
    assert e.store_tables == ["a.tiemb", "b.tiemb"] and e.table_info(1) == (7, 2, "float16")


def test_defaults_are_the_parameters_defaults_when_the_store_has_no_tiers(tmp_path):
    d, _ = _write(tmp_path)
    assert "tiers" not in json.load(open(os.path.join(d, "store.json")))
    assert store.read_store(d)["tiers"] == {k: PARAMETERS[f"tiemb/{k}"][1] for k in store.TIER_KEYS}


def test_write_tiers_merges_renews_the_content_id_and_keeps_the_tables(tmp_path):
    d, _ = _write(tmp_path)
    before = store.read_store(d)
    store.write_tiers(d, {"cache_percentage": 0.25})
    store.write_tiers(d, {"tiemb/hit_rate_threshold": 0.5})
    after = store.read_store(d)
    assert after["tiers"]["cache_percentage"] == 0.25 and after["tiers"]["hit_rate_threshold"] == 0.5
    assert after["content_id"] != before["content_id"]
    assert {k: after[k] for k in ("tables", "checksums", "file_bytes", "max_nnz")} == \
        {k: before[k] for k in ("tables", "checksums", "file_bytes", "max_nnz")}
    store.resize_store(d, max_batch_size=16, slot_num=2, max_nnz=3)
    assert store.read_store(d)["tiers"] == after["tiers"] and store.read_store(d)["max_batch_size"] == 16
    assert [f for f in os.listdir(d) if f.startswith(".")] == []   # no temporary file left behind


@pytest.mark.parametrize("tiers, message", [
    ({"cache_percentage": 0}, r"store.json: tiers.cache_percentage must be in \(0, 1\], got 0"),
    ({"cpu_cache_percentage": 1.5}, r"store.json: tiers.cpu_cache_percentage must be in \[0, 1\], got 1.5"),
    ({"tiemb/max_nnz": 4}, r"tiers: unknown key 'tiemb/max_nnz'"),
    ({"hit_rate_threshold": "high"}, r"tiers: hit_rate_threshold must be a number, got 'high'"),
])
def test_bad_tiers_are_refused_and_the_store_is_unchanged(tmp_path, tiers, message):
    d, _ = _write(tmp_path)
    text = open(os.path.join(d, "store.json")).read()
    with pytest.raises(ValueError, match=message):
        store.write_tiers(d, tiers)
    assert open(os.path.join(d, "store.json")).read() == text


@pytest.mark.parametrize("change, message", [
    (lambda doc: doc["sizes"].update(max_nnz=0), r"store.json: sizes.max_nnz must be an integer >= 1, got 0"),
    (lambda doc: doc["sizes"].update(max_nnz="3"), r"sizes.max_nnz must be an integer >= 1, got \"3\""),
    (lambda doc: doc.update(colour="blue"), r"store.json: unknown key colour \(this tiemb reads store format 3\)"),
    (lambda doc: doc["tables"][1].update(dtype="int8"), r"tables\[1\].dtype must be float32 or float16, got 'int8'"),
    (lambda doc: doc["tables"][0].update(file="../a.tiemb"), r"tables\[0\].file must be a file name in the store"),
    (lambda doc: doc["tables"][0].pop("rows"), r"store.json: tables\[0\].rows is missing"),
    (lambda doc: doc.update(version=4), r"store.json: store format 4 is not read by this tiemb \(it reads 3\)"),
    (lambda doc: doc.update(content_id="xyz"), r"content_id must be 32 lowercase hex digits, got 'xyz'"),
    (lambda doc: doc["tables"][1].update(rows=8), r"b.tiemb: does not match the store's store.json \(7 x 2 float16"),
])
def test_every_field_is_checked_with_an_error_naming_it(tmp_path, change, message):
    d, _ = _write(tmp_path)
    _edit(d, change)
    with pytest.raises(ValueError, match=message):
        _C.CpuEngine.from_store(d)
    assert store.check_store(d) and store.check_store(d)[0]


def test_a_changed_byte_fails_the_description_checksum(tmp_path):
    d, _ = _write(tmp_path)
    path = os.path.join(d, "store.json")
    text = open(path).read()
    open(path, "w").write(text.replace('"max_nnz": 3', '"max_nnz": 4'))
    with pytest.raises(ValueError, match=r"store.json: checksum mismatch \(CRC32C [0-9a-f]{8}, its checksum says"):
        store.read_store(d)


def test_a_store_of_the_old_format_names_the_store_and_the_fix(tmp_path):
    d, _ = _write(tmp_path)
    os.remove(os.path.join(d, "store.json"))
    with open(os.path.join(d, "manifest.txt"), "w") as f:
        f.write("tiemb-store 2\ncontent_id " + "0" * 32 + "\nmax_batch_size 8\nslot_num 2\nmax_nnz 3\n")
    want = rf"table store {d}: has manifest.txt \(store format 2\) but no store.json; this tiemb reads store " \
           r"format 3: re-optimize the model with this tiemb \(tiemb optimize\)"
    with pytest.raises(ValueError, match=want):
        store.read_store(d)
    with pytest.raises(ValueError, match=want):   # the engines read through the same reader
        _C.CpuEngine.from_store(d)
    assert store.is_store(d)


def test_table_names_that_are_not_plain_file_names_are_refused(tmp_path):
    for name in ("store.json", "x/y", ""):
        with pytest.raises(ValueError, match="table name must be a plain file name"):
            store.write_store(str(tmp_path / "s"), {name: np.ones((2, 2), np.float32)}, max_batch_size=1, slot_num=1,
                              max_nnz=1)
