"""tiemb advise on a model: the traffic file holds model inputs (feed dicts,
as optimize()'s test_data); the model's graph gives the ids per table."""

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from tiemb import advise, cli  # noqa: E402
from tiemb.bench import models  # noqa: E402

VOCAB = [200, 300, 5000, 40] * 6 + [77, 1000]


@pytest.fixture(scope="module")
def wide_deep(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("models") / "wd")
    spec = models.wide_deep(path, VOCAB, tower=(16,), seed=1)
    return path, spec


def test_model_traffic_per_table(wide_deep, tmp_path, seed, capsys):
    path, spec = wide_deep
    rng = np.random.default_rng(seed)
    batches = [models.random_batch(spec, 64, rng) for _ in range(6)]
    np.savez(tmp_path / "t.npz", **{f"{k}/{n}": v for k, b in enumerate(batches) for n, v in b.items()})
    rep = advise.advise(path, str(tmp_path / "t.npz"), target_hit_rate=0.9)
    tables = {t["table"]: t for t in rep["tables"]}
    assert len(tables) == 52                      # a deep and a wide table per categorical feature
    # Each table's traffic is its feature's column of `cat`: feature 2 has 5000 rows, and its ids are
    # what the simulator sees (checked by simulating them directly).
    t = next(t for t in tables.values() if t["rows"] == 5000)
    col = VOCAB.index(5000)
    direct = advise.simulate(advise.TableInfo(t["table"], 5000, t["dim"]), [b["cat"][:, col] for b in batches], 0.2,
                             warmup=3)
    at = next(p for p in t["curve"] if p["cache_percentage"] == 0.2)
    assert at["hit_rate"] == direct["hit_rate"] and t["ids"] == 6 * 64
    assert cli.main(["advise", path, "--traffic", str(tmp_path / "t.npz")]) == 0
    assert "recommended cache_percentage" in capsys.readouterr().out


def test_model_traffic_errors(wide_deep, tmp_path):
    path, spec = wide_deep
    b = models.random_batch(spec, 8, np.random.default_rng(0))
    np.savez(tmp_path / "t.npz", cat=b["cat"])
    with pytest.raises(advise.AdviseError, match=r"model inputs \['dense'\] are missing"):
        advise.advise(path, str(tmp_path / "t.npz"))
