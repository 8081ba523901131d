"""The build links hiredis wherever pkg-config finds it (TIEMB_REDIS=AUTO)."""

import shutil
import subprocess

import pytest

import tiemb._C as C


@pytest.mark.skipif(shutil.which("pkg-config") is None, reason="no pkg-config to ask for hiredis")
def test_redis_compiled_where_hiredis_exists():
    has = subprocess.run(["pkg-config", "--exists", "hiredis"]).returncode == 0
    assert C.redis_compiled() == has, ("hiredis is installed but this build did not link it" if has else
                                       "the build claims hiredis that pkg-config does not find")


def test_address_parsing_everywhere():
    # Parsing needs no hiredis: the same errors in every build.
    assert C.parse_cluster_address("a:1,b.example:6379 , 10.0.0.1:7000") == [("a", 1), ("b.example", 6379),
                                                                              ("10.0.0.1", 7000)]
    for bad in ["a", ":1", "a:0", "a:x", "a:1,,b:2", "a b:1"]:
        with pytest.raises(ValueError, match="tiemb/distributed_address: malformed entry"):
            C.parse_cluster_address(bad)
