"""Damaged table stores: every corruption is an error naming the file, never
a crash and never a wrong number (issue 11, defect 3)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import tiemb  # noqa: E402
from rel_models import feeds, lookup_model  # noqa: E402
from tiemb import _C, tf_ops  # noqa: E402

pytestmark = pytest.mark.skipif(not tf_ops.available(), reason="this build has no TensorFlow op library")


def _store(path, rng):
    tables = {f"t{k}.tiemb": rng.standard_normal((int(rng.integers(1, 3000)), int(rng.integers(1, 40))))
              .astype(rng.choice([np.float32, np.float16])) for k in range(3)}
    tf_ops.write_store(path, tables, max_batch_size=16, slot_num=3, max_nnz=4)
    return tables


def _corrupt(path, rng):
    """Damages file `path` one random way; returns what was done."""
    data = bytearray(open(path, "rb").read())
    how = rng.choice(["flip", "truncate", "append", "zero", "delete", "garbage"])
    if how == "flip":
        at = int(rng.integers(0, len(data)))
        data[at] ^= 1 << int(rng.integers(0, 8))
    elif how == "truncate":
        data = data[:int(rng.integers(0, len(data)))]
    elif how == "append":
        data += bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    elif how == "zero":
        at = int(rng.integers(0, len(data)))
        n = int(rng.integers(1, 64))
        if not any(data[at:at + n]):
            data[at] ^= 0xFF
        else:
            data[at:at + n] = bytes(len(data[at:at + n]))
    elif how == "garbage":   # random bytes, not valid UTF-8 in a description
        data = bytearray(b"\xff\xfe" + bytes(rng.integers(0, 256, len(data), dtype=np.uint8)))
    if how == "delete":
        os.remove(path)
    else:
        open(path, "wb").write(bytes(data))
    return how


def _lookup(store, tables):
    names = sorted(tables)
    dims = [tables[n].shape[1] for n in names]
    return tf_ops.lookup(store, [tf.constant([0], tf.int64)] * 3, [tf.constant([0], tf.int64)] * 3, tables=names,
                         dims=dims, combiners=["sum"] * 3, modes=["plain"] * 3)


def test_random_corruption_is_an_error_naming_the_file(tmp_path, seed):
    rng = np.random.default_rng(seed)
    base = str(tmp_path / "base")
    tables = _store(base, rng)
    want = [t.numpy() for t in _lookup(base, tables)]
    for k in range(60):
        d = str(tmp_path / f"c{k}")
        shutil.copytree(base, d)
        victim = str(rng.choice(sorted(os.listdir(d))))
        how = _corrupt(os.path.join(d, victim), rng)
        case = f"case {k}: {how} {victim}"
        problems = tf_ops.check_store(d)
        assert problems and victim in problems[0], (case, problems)
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            got = [t.numpy() for t in _lookup(d, tables)]
            pytest.fail(f"{case}: served {'the right' if all(np.array_equal(a, b) for a, b in zip(got, want)) else 'WRONG'} "
                        "numbers from a damaged store")
        assert victim in str(e.value), (case, str(e.value))
        if victim == "store.json":   # the Python reader: ValueError, never UnicodeDecodeError
            with pytest.raises(ValueError, match="store.json"):
                _C.read_store_manifest(d)


def test_every_header_byte_is_checked(tmp_path):
    d = str(tmp_path / "s")
    tf_ops.write_store(d, {"a.tiemb": np.ones((3, 2), np.float32)}, max_batch_size=8, slot_num=1, max_nnz=3)
    path = os.path.join(d, "a.tiemb")
    good = open(path, "rb").read()
    for at in range(64):
        data = bytearray(good)
        data[at] ^= 0x04
        open(path, "wb").write(bytes(data))
        with pytest.raises(ValueError, match="a.tiemb"):
            _C.read_table_rows(path, [0])
        assert tf_ops.check_store(d), f"byte {at}"


def test_format_1_files_are_refused_with_a_clear_message(tmp_path):
    d = str(tmp_path / "s")
    tf_ops.write_store(d, {"a.tiemb": np.ones((3, 2), np.float32)}, max_batch_size=8, slot_num=1, max_nnz=3)
    path = os.path.join(d, "a.tiemb")
    data = bytearray(open(path, "rb").read())
    data[8:12] = (1).to_bytes(4, "little")
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match=r"a.tiemb: format version 1 has no checksums .* re-optimize"):
        _C.read_table_rows(path, [0])
    os.remove(os.path.join(d, "store.json"))
    with open(os.path.join(d, "manifest.txt"), "w") as f:
        f.write("tiemb-store 1\nmax_batch_size 8\nslot_num 1\nmax_nnz 3\ntable a.tiemb\n")
    with pytest.raises(ValueError, match=r"manifest.txt: store format 1 has no checksums .* re-optimize"):
        _C.read_store_manifest(d)


def test_damaged_optimized_model_fails_with_the_file_and_tiemb_check_says_so(tmp_path):
    src = lookup_model(str(tmp_path / "a"), 1, vocab=5000, dim=16)
    p = str(tmp_path / "opt")
    feed = feeds(vocab=5000)
    tiemb.optimize(src, 0, 1, ["16*4"], test_data=[feed], save_path=p, runs=2)
    cli = [sys.executable, "-m", "tiemb", "check", p]
    ok = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd="/")
    assert ok.returncode == 0 and "sound" in ok.stdout, ok.stdout + ok.stderr
    table = [f for f in os.listdir(os.path.join(p, "assets")) if f.endswith(".tiemb")][0]
    path = os.path.join(p, "assets", table)
    data = bytearray(open(path, "rb").read())
    data[64 + 4 * 16 * int(feed["ids"][0, 0]) + 1] ^= 0x10      # a byte of a row the batch reads
    open(path, "wb").write(bytes(data))
    bad = subprocess.run(cli, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd="/")
    assert bad.returncode == 1 and bad.stdout.count("\n") == 1 and table in bad.stdout, bad.stdout + bad.stderr
    # A fresh serving process (this one still holds the engine it loaded
    # before the damage, with the rows as they were).
    code = ("import sys, numpy as np, tensorflow as tf, tiemb\n"
            "m = tf.saved_model.load(sys.argv[1])\n"
            "try:\n"
            "    m.signatures['serving_default'](ids=tf.constant(np.zeros((2, 4), np.int64)))\n"
            "except tf.errors.InvalidArgumentError as e:\n"
            "    print('refused', ' '.join(str(e).split()))\n")
    run = subprocess.run([sys.executable, "-c", code, p], capture_output=True, text=True, cwd="/",
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0 and run.stdout.startswith("refused") and f"{table}: checksum mismatch" in run.stdout, \
        run.stdout + run.stderr[-2000:]


def test_crc32c_known_values_and_both_code_paths(seed):
    # RFC 3720's CRC32C check value, and the iSCSI test vector of 32 zero bytes.
    assert _C.crc32c(b"123456789") == 0xE3069283 == _C.crc32c(b"123456789", portable=True)
    assert _C.crc32c(bytes(32)) == 0x8A9136AA == _C.crc32c(bytes(32), portable=True)
    assert _C.crc32c(b"6789", _C.crc32c(b"12345")) == 0xE3069283
    rng = np.random.default_rng(seed)
    for size in [1, 7, 1 << 20, 3 << 20, (5 << 20) + 13]:
        data = rng.integers(0, 256, size, dtype=np.uint8)
        blocks = [data[k:k + (1 << 20)].tobytes() for k in range(0, size, 1 << 20)]
        want = _C.crc32c(b"".join(_C.crc32c(b).to_bytes(4, "little") for b in blocks))
        assert _C.block_crc32c(data, threads=1) == _C.block_crc32c(data) == want
        assert _C.block_crc32c(data, threads=1, portable=True) == want
