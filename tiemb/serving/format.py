"""The bundle directory: what is in it, and reading it back with clear errors.

::

    DIR/bundle.json        format version, level, buckets, inputs, outputs,
                           lookup ops and their slots' wiring, dense arguments,
                           what was measured at export
    DIR/store/             the table store (one file per table + store.json)
    DIR/dense_<B>.mlir     the dense part for batch bucket B (StableHLO text)
    DIR/weights.npz        the dense part's weights, passed as arguments
    DIR/baseline_<B>.mlir  with --baseline: the original whole graph, where XLA compiles it
    DIR/baseline_weights.npz
    DIR/config.json        the tiemb/* parameters used (tiers on the GPU)
    DIR/tests.npz          test batches and TensorFlow's (CPU) outputs for them
"""

from __future__ import annotations

import json
import os
import zipfile
from typing import Dict, List

import numpy as np

# 2: lookup ops with fused outputs and pooled (dense id matrix) slots, read
# in place by the XLA custom call (ops[i]["outputs"], slots' output/offset/
# id_width/serve_mode, inputs' "capacity"); 1 had one output per slot.
FORMAT_VERSION = 2
META = "bundle.json"
STORE = "store"
WEIGHTS = "weights.npz"
BASELINE_WEIGHTS = "baseline_weights.npz"
CONFIG = "config.json"
TESTS = "tests.npz"


class BundleError(ValueError):
    """A bundle that cannot be read: missing or corrupt files, another format version."""


def dense_module(batch: int) -> str:
    return f"dense_{batch}.mlir"


def baseline_module(batch: int) -> str:
    return f"baseline_{batch}.mlir"


def write_meta(bundle_dir: str, meta: dict) -> None:
    with open(os.path.join(bundle_dir, META), "w") as f:
        json.dump(dict(meta, format_version=FORMAT_VERSION), f, indent=1, sort_keys=True)


def write_tests(bundle_dir: str, batches: List[dict], outputs: List[dict]) -> None:
    arrays = {"count": np.array(len(batches))}
    for b, (feeds, outs) in enumerate(zip(batches, outputs)):
        arrays.update({f"{b}/in/{k}": v for k, v in feeds.items()})
        arrays.update({f"{b}/out/{k}": v for k, v in outs.items()})
    np.savez(os.path.join(bundle_dir, TESTS), **arrays)


_REQUIRED = ("level", "buckets", "inputs", "outputs", "ops", "dense", "batch_source")


def read_meta(bundle_dir: str) -> dict:
    """bundle.json, checked: raises BundleError naming the file and what is wrong."""
    path = os.path.join(bundle_dir, META)
    if not os.path.isdir(bundle_dir):
        raise BundleError(f"{bundle_dir} is not a directory (a bundle is the directory `tiemb export` wrote)")
    try:
        with open(path) as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir} is not a tiemb bundle: it has no {META}") from None
    except (OSError, ValueError) as e:
        raise BundleError(f"{path} is corrupt: {e}") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{path} is corrupt: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{bundle_dir} is bundle format version {version!r}; this tiemb reads version "
                          f"{FORMAT_VERSION} only (a bundle holds no TensorFlow graph to convert from): "
                          f"export the model again with this tiemb (tiemb export MODEL --bundle DIR)")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise BundleError(f"{path} is corrupt: missing {', '.join(missing)}")
    files = [dense_module(b) for b in meta["buckets"]] + [WEIGHTS]
    if meta["ops"]:
        files.append(os.path.join(STORE, "store.json"))
    absent = [f for f in files if not os.path.isfile(os.path.join(bundle_dir, f))]
    if absent:
        raise BundleError(f"{bundle_dir} is incomplete: missing {', '.join(absent)}")
    return meta


def read_npz(bundle_dir: str, name: str) -> Dict[str, np.ndarray]:
    path = os.path.join(bundle_dir, name)
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir} is incomplete: missing {name}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise BundleError(f"{path} is corrupt: {e}") from None


def read_module(bundle_dir: str, name: str) -> str:
    path = os.path.join(bundle_dir, name)
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        raise BundleError(f"{bundle_dir} is incomplete: missing {name}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is corrupt: {e}") from None


def read_tests(bundle_dir: str):
    """[(feeds, TensorFlow's outputs)] recorded at export."""
    arrays = read_npz(bundle_dir, TESTS)
    out = []
    for b in range(int(arrays["count"])):
        feeds = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"{b}/in/")}
        outs = {k.split("/", 2)[2]: v for k, v in arrays.items() if k.startswith(f"{b}/out/")}
        out.append((feeds, outs))
    return out
