"""Fixtures of the task tests: tiny models in the TF Serving layout, a task
database with its command line."""

import pytest

from taskhelp import Tasks


@pytest.fixture(scope="session")
def serving_model(tmp_path_factory):
    """models/wd/1 and models/wd/2: two versions of a tiny Keras Wide&Deep."""
    pytest.importorskip("tensorflow", reason="the task tests optimize Keras models (the GPU machine has no TensorFlow)")
    from tiemb.bench import models

    root = tmp_path_factory.mktemp("models") / "wd"
    for v in (1, 2):
        models.wide_deep(str(root / str(v)), models.vocab_for("tiny"), tower=(16,), seed=v)
    return str(root)


@pytest.fixture
def tasks(tmp_path):
    t = Tasks(tmp_path / "tasks.db")
    yield t
    t.close()


