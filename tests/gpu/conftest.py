import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tiered_variants import TIERED_ENV, TIERED_VARIANTS  # noqa: E402


@pytest.fixture(params=list(TIERED_VARIANTS))
def tiered_variant(request, monkeypatch):
    """Runs the test under each tiered variant (its name is the test id's suffix)."""
    for k in TIERED_ENV:
        monkeypatch.delenv(k, raising=False)
    for k, v in TIERED_VARIANTS[request.param].items():
        monkeypatch.setenv(k, v)
    return request.param
