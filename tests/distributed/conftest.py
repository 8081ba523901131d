import pytest

from tiemb.distributed.local_cluster import RedisCluster, redis_missing_reason


def _skip_without_redis():
    why = redis_missing_reason()
    if why:
        pytest.skip(f"distributed tests need a local Redis: {why}")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A 3-master, 3-replica cluster shared by the tests that do not break it."""
    _skip_without_redis()
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def fresh_cluster(tmp_path):
    """A cluster of its own, for a test that kills or stops nodes."""
    _skip_without_redis()
    clusters = []

    def make(**kwargs):
        c = RedisCluster(tmp_path / f"cluster{len(clusters)}", **kwargs).start()
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        c.stop()
