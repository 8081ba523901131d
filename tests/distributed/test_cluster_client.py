"""The hiredis cluster client against a real 3-master, 3-replica cluster."""

import subprocess

import pytest

import tiemb._C as C

pytestmark = pytest.mark.skipif(not C.redis_compiled(), reason="this build has no hiredis (TIEMB_REDIS)")


def test_hash_slot_matches_redis(redis_cluster):
    # The cluster itself is the oracle for the key hash.
    port = redis_cluster.ports[0]
    for key in ["foo", "tiemb:m:t:v:b0", "{user1000}.following", "a{}b", "x{y}z{w}", "{}", "é"]:
        want = int(redis_cluster.cli(port, "CLUSTER", "KEYSLOT", key).strip())
        assert C.key_hash_slot(key.encode()) == want, key


def test_set_get_round_trips(redis_cluster):
    c = C.ClusterClient(redis_cluster.address, 2000, 3)
    assert len(c.masters()) == 3
    keys = [f"rt:{i}" for i in range(300)]
    values = [bytes([i % 256]) * (i + 1) for i in range(300)]
    c.run([["SET", k, v] for k, v in zip(keys, values)])
    before = c.stats()
    got = c.run([["GET", k] for k in keys] + [["GET", "rt:absent"]])
    after = c.stats()
    assert got[:-1] == values and got[-1] is None
    # 301 keys over 3 masters: one pipelined round trip per master.
    assert after["round_trips"] - before["round_trips"] == 3
    # redis-cli (a different client) reads what we wrote.
    assert redis_cluster.cli(redis_cluster.ports[0], "-c", "GET", "rt:5").strip() == "\x05" * 6


def test_follows_moved_after_resharding(redis_cluster):
    c = C.ClusterClient(redis_cluster.address, 2000, 3)
    key = "moved:key"
    c.run([["SET", key, b"v1"]])
    slot = C.key_hash_slot(key.encode())
    masters = redis_cluster.masters()
    ids = {}
    for line in redis_cluster.cli(masters[0], "CLUSTER", "NODES").splitlines():
        parts = line.split()
        ids[int(parts[1].split("@")[0].rsplit(":", 1)[1])] = parts[0]
    owner = next(p for p in masters if redis_cluster.cli(p, "GET", key, check=False).strip() == "v1")
    target = next(p for p in masters if p != owner)
    # Migrate the slot by hand, as redis-cli --cluster reshard does.
    redis_cluster.cli(target, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", ids[owner])
    redis_cluster.cli(owner, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", ids[target])
    redis_cluster.cli(owner, "MIGRATE", "127.0.0.1", str(target), "", "0", "5000", "KEYS", key)
    r0 = c.stats()["redirects"]
    assert c.run([["GET", key]]) == [b"v1"]  # ASK to the importing node
    assert c.stats()["redirects"] == r0 + 1
    for p in masters:
        redis_cluster.cli(p, "CLUSTER", "SETSLOT", str(slot), "NODE", ids[target])
    redis_cluster.wait_ok()
    r0 = c.stats()["redirects"]
    assert c.run([["GET", key]]) == [b"v1"]  # MOVED, then the new owner
    assert c.stats()["redirects"] == r0 + 1


@pytest.mark.parametrize("address, message", [
    ("localhost", r"malformed entry 'localhost'"),
    ("127.0.0.1:99999", r"malformed entry '127.0.0.1:99999'"),
    ("127.0.0.1:70,", r"malformed entry ''"),
    ("", r"tiemb/distributed_address: empty"),
])
def test_malformed_address(address, message):
    with pytest.raises(ValueError, match=message):
        C.ClusterClient(address, 500, 0)


def test_unreachable_address():
    from tiemb.distributed.local_cluster import free_ports

    port = free_ports(1)[0]
    with pytest.raises(ValueError, match=rf"no reachable cluster node \(127.0.0.1:{port} unreachable\)") as e:
        C.ClusterClient(f"127.0.0.1:{port}", 300, 0)
    assert "\n" not in str(e.value)


def test_non_cluster_redis(tmp_path):
    from tiemb.distributed.local_cluster import free_ports, redis_missing_reason

    if redis_missing_reason():
        pytest.skip(redis_missing_reason())
    port = free_ports(1)[0]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        import time
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True).stdout.strip() == "PONG":
                break
            time.sleep(0.05)
        with pytest.raises(ValueError, match=rf"the Redis at 127.0.0.1:{port} is not a cluster"):
            C.ClusterClient(f"127.0.0.1:{port}", 500, 0)
    finally:
        proc.kill()
        proc.wait()


def test_eval_is_routed_by_its_first_key(redis_cluster):
    """EVAL goes to the node of its first key (argv[3]), wherever the script
    text hashes: keys on all three masters, each read by a script."""
    c = C.ClusterClient(redis_cluster.address, 2000, 3)
    keys = [f"eval:{i}" for i in range(30)]
    c.run([["SET", k, k.encode()] for k in keys])
    assert len({redis_cluster.cli(redis_cluster.ports[0], "CLUSTER", "KEYSLOT", k) for k in keys}) > 3
    got = c.run([["EVAL", "return redis.call('GET', KEYS[1])", "1", k] for k in keys])
    assert got == [k.encode() for k in keys]
    assert c.stats()["redirects"] == 0
    with pytest.raises(ValueError, match="a cluster EVAL must name at least one key"):
        c.run([["EVAL", "return 1", "0"]])
