import os
import random

import pytest

# One base seed per run: every run draws fresh inputs, and a failure can be
# replayed with TIEMB_TEST_SEED=<seed>.
BASE_SEED = int(os.environ.get("TIEMB_TEST_SEED", random.SystemRandom().randrange(2**31)))


def pytest_report_header(config):
    return f"tiemb test seed: TIEMB_TEST_SEED={BASE_SEED}"


@pytest.fixture
def seed(request):
    """A per-test seed derived from the run's base seed and the test id."""
    import zlib

    return (BASE_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**31


def pytest_collection_modifyitems(config, items):
    import tiemb

    if tiemb.cuda_available():
        return
    why = ("no CUDA GPU visible" if tiemb.build_info()["cuda_compiled"]
           else "this build has no CUDA part (nvcc was not found)")
    skip = pytest.mark.skip(reason=f"GPU test: {why}")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
