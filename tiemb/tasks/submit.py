"""Turning a submission (a name, models and versions, settings) into checked
task rows: every check runs before anything is queued, so bad input queues
nothing.

Models are given as ``PATH`` or ``PATH@VERSION[,VERSION...]``:

* a TensorFlow Serving folder (``model/1/``, ``model/2/``, each a SavedModel):
  every version, or the ones after ``@``; the model's name is the folder's;
* a SavedModel directory: one version; when its folder name is a number
  inside a model folder (``model/2``) that is its version, else version 1;
* a frozen graph ``.pb``: version 1, named after the file.

Naming (seed 001): one model and version gives one task named NAME; more give
one task each, named ``NAME-<model>-<version>#<n>`` with n counting from 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..config import OptimizeConfig
from ..shapes import ShapeSpecError, parse_input_shapes
from .store import Store


@dataclass(frozen=True)
class ModelVersion:
    model: str      # the model's name
    version: str
    path: str       # what optimize() reads: a SavedModel directory or a .pb
    root: str       # the model's own directory, which the save root may not overlap


def _is_saved_model(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "saved_model.pb")) or \
        os.path.isfile(os.path.join(path, "saved_model.pbtxt"))


def _versions(folder: str) -> Dict[str, str]:
    """TF Serving layout: numeric subfolders holding a SavedModel."""
    out = {}
    if os.path.isdir(folder):
        for d in os.listdir(folder):
            if d.isdigit() and _is_saved_model(os.path.join(folder, d)):
                out[d] = os.path.join(folder, d)
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def resolve_model(spec: str) -> List[ModelVersion]:
    """``PATH[@VERSION[,VERSION...]]`` -> the model versions it names (see the
    module doc); raises ValueError naming the path when there is no model."""
    path, _, wanted = spec.partition("@")
    if not path:
        raise ValueError(f"--model {spec!r}: no path before '@'")
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.exists(path):
        raise ValueError(f"--model {spec!r}: {path} does not exist")
    if os.path.isfile(path):
        if wanted:
            raise ValueError(f"--model {spec!r}: '@VERSION' needs a model folder with version subfolders, "
                             f"{path} is a file")
        if not path.endswith(".pb"):
            raise ValueError(f"--model {spec!r}: {path} is neither a SavedModel directory nor a frozen graph .pb")
        name = os.path.splitext(os.path.basename(path))[0]
        return [ModelVersion(name, "1", path, os.path.dirname(path))]
    versions = _versions(path)
    if wanted:
        if not versions:
            raise ValueError(f"--model {spec!r}: {path} has no version subfolders (1/, 2/, ... each a SavedModel)")
        out = []
        for v in (w.strip() for w in wanted.split(",")):
            if v not in versions:
                raise ValueError(f"--model {spec!r}: {path} has no version {v!r} (it has {', '.join(versions)})")
            out.append(ModelVersion(os.path.basename(path), v, versions[v], path))
        return out
    if _is_saved_model(path):
        parent = os.path.dirname(path)
        if os.path.basename(path).isdigit():
            return [ModelVersion(os.path.basename(parent), os.path.basename(path), path, parent)]
        return [ModelVersion(os.path.basename(path), "1", path, path)]
    if versions:
        return [ModelVersion(os.path.basename(path), v, p, path) for v, p in versions.items()]
    raise ValueError(f"--model {spec!r}: {path} is not a SavedModel (no saved_model.pb), a TF Serving model folder "
                     "(1/, 2/, ...) or a frozen graph .pb")


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_save_root(save_root: str, units: Sequence[ModelVersion]) -> str:
    """The absolute save root; it may not overlap any model's directory
    (seed 001), in either direction."""
    if not save_root:
        raise ValueError("--save-root is required: the folder where the optimized models go")
    root = os.path.abspath(os.path.expanduser(save_root))
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(f"--save-root {root} exists and is not a folder")
    for u in units:
        if _inside(root, u.root):
            raise ValueError(f"--save-root {root} is inside the directory of model {u.model!r} ({u.root}); "
                             "the save location may not overlap the model's directory")
        if _inside(u.root, root):
            raise ValueError(f"--save-root {root} contains the directory of model {u.model!r} ({u.root}); "
                             "the save location may not overlap the model's directory")
    return root


def read_tensor_info(values, files: bool = True) -> str:
    """``--tensor-info``: each value lines themselves or, with ``files``, a
    file of lines; returns the joined text after parsing it (errors name the
    file, the line and the position in it). The web page passes
    ``files=False``: a remote form must not make the server read its files."""
    if isinstance(values, str):
        values = [values]
    if not values:
        raise ValueError("--tensor-info is required: one 'element:dtype(shape)' line per model input, e.g. "
                         "'cat:int64(1*26,512*26)' (a file of such lines works too)")
    pieces = []
    for v in values:
        source = "--tensor-info"
        if not isinstance(v, str):
            raise ValueError(f"--tensor-info: expected text lines, got {type(v).__name__} {v!r}")
        if files and "(" not in v and os.path.isfile(v):
            source = f"--tensor-info file {v}"
            with open(v) as f:
                v = f.read()
        try:
            parse_input_shapes(v)
        except ShapeSpecError as e:
            raise ValueError(f"{source}: {e}") from None
        pieces.append(v.strip("\n"))
    text = "\n".join(pieces)
    try:
        parse_input_shapes(text)  # duplicates across pieces
    except ShapeSpecError as e:
        raise ValueError(f"--tensor-info: {e}") from None
    return text


def parse_tags(pairs) -> Dict[str, str]:
    """``['team=ads', 'stage=prod']`` -> ``{'team': 'ads', 'stage': 'prod'}``."""
    tags = {}
    for p in pairs or []:
        key, eq, value = p.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"tag {p!r}: expected key=value")
        tags[key.strip()] = value.strip()
    return tags


def check_settings(level, device, runs, config) -> dict:
    """The settings a task runs with, checked; ``config`` a dict of tiemb/*
    parameters (validated by :class:`tiemb.OptimizeConfig`)."""
    if level not in (0, 1):
        raise ValueError(f"level must be 0 (lossless) or 1 (FP16), got {level!r}")
    if device not in ("cpu", "gpu"):
        raise ValueError(f"device must be cpu or gpu, got {device!r}")
    if not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs!r}")
    config = dict(config or {})
    try:
        OptimizeConfig.from_dict(config).resolve()
    except (ValueError, TypeError) as e:
        raise ValueError(f"config: {e}") from None
    return {"level": level, "device": device, "runs": runs, "config": config}


def read_config_file(path: Optional[str]) -> dict:
    if not path:
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--config {path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {path}: expected a JSON object of tiemb/* parameters")
    return data


def task_names(name: str, units: Sequence[ModelVersion]) -> List[str]:
    """Seed 001's rule: NAME alone for one model version, else
    ``NAME-<model>-<version>#<n>``."""
    if len(units) == 1:
        return [name]
    return [f"{name}-{u.model}-{u.version}#{n}" for n, u in enumerate(units, 1)]


def submit(store: Store, name: str, models: Sequence[str], tensor_info, save_root: str, *, level: int = 0,
           device: str = "cpu", config: Optional[dict] = None, tags: Optional[Dict[str, str]] = None,
           runs: int = 50, tensor_info_files: bool = False) -> List[int]:
    """Queues one task per model version; returns their ids. Nothing is
    queued when anything is wrong.

    Args:
        store: the task database.
        name: the task name (the prefix when there are several versions).
        models: ``PATH[@VERSION,...]`` strings (see the module doc).
        tensor_info: seed 001 lines (a string or a list of strings; with
            ``tensor_info_files``, a string may name a file of lines).
        save_root: where the optimized models go (``<save_root>/<id>-<name>``);
            it may not overlap a model's directory.
        level: 0 lossless, 1 FP16.
        device: "cpu" or "gpu", where the model will be served.
        config: tiemb/* parameters (a dict, as in a ``--config`` file).
        tags: key -> value labels.
        runs: timed runs of each model in optimize().
    """
    name = (name or "").strip()
    if not name or "\n" in name:
        raise ValueError(f"--name must be a non-empty single line, got {name!r}")
    if not models:
        raise ValueError("--model is required: a SavedModel, a TF Serving model folder or a .pb (repeatable)")
    units: List[ModelVersion] = []
    for m in models:
        units.extend(resolve_model(m))
    seen = set()
    for u in units:
        if u.path in seen:
            raise ValueError(f"model {u.model} version {u.version} ({u.path}) is given twice")
        seen.add(u.path)
    root = check_save_root(save_root, units)
    info = read_tensor_info(tensor_info, files=tensor_info_files)
    settings = check_settings(level, device, runs, config)
    rows = [dict(settings, name=n, model=u.model, version=u.version, model_path=u.path, save_root=root,
                 tensor_info=info, tags=dict(tags or {}))
            for n, u in zip(task_names(name, units), units)]
    for r in rows:
        out_parent = r["save_root"]
        if os.path.exists(out_parent) and not os.access(out_parent, os.W_OK):
            raise ValueError(f"--save-root {out_parent} is not writable")
    return store.insert_many(rows)
