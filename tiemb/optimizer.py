"""``tiemb.optimize()``: seed 000's interface (also ``tiacc_inference.optimize``).

    output_model, report = tiemb.optimize(input_model, optimization_level, device_type, input_shapes,
                                          input_nodes_names=None, output_nodes_names=None, test_data=None,
                                          save_path=None, optimization_config=None)

A short pipeline of the steps in :mod:`tiemb.pipeline`: load once; analyse;
check or generate test data; rewrite (dense backend chosen there); save;
verify; time; report. See README "optimize()" for every argument.
"""

from __future__ import annotations

import os
import shutil
from typing import Callable, Optional

import numpy as np

from . import _files
from .pipeline import measure, save, test_data as data
from .pipeline.analyse import analyse, engine_sizes
from .pipeline.errors import OptimizeError
from .pipeline.load import device_of, kind_of, load_model
from .pipeline.report import cache_report, make_report
from .pipeline.rewrite import original_runner, stage
from .pipeline.test_data import MAX_GENERATED_BYTES
from .pipeline.verify import verify
from .settings import Settings
from .shapes import parse_input_shapes

__all__ = ["optimize", "inspect", "OptimizeError", "MAX_GENERATED_BYTES"]


def optimize(input_model, optimization_level, device_type, input_shapes, input_nodes_names=None,
             output_nodes_names=None, test_data=None, save_path=None, optimization_config=None, *,
             overwrite: bool = False, runs: int = 50, seed: int = 0, progress: Optional[Callable] = None):
    """Optimizes a TensorFlow recommender model; returns (output_model, report).

    Args (seed 000's, in its order):
        input_model: SavedModel directory, frozen graph ``.pb`` path, or a GraphDef.
        optimization_level: 0 lossless, 1 float16 tables + bfloat16 dense matmuls.
        device_type: 0 or "gpu", 1 or "cpu". GPU where TensorFlow sees none is an error.
        input_shapes: every form of seeds 000 and 001 (see :func:`tiemb.parse_input_shapes`).
        input_nodes_names / output_nodes_names: inferred when None (signature,
            or placeholders and sinks of a graph); unknown names are errors.
        test_data: list of feed dicts; None: generated from input_shapes.
        save_path: SavedModel directory (SavedModel input) or ``.pb`` file
            (frozen graph / GraphDef input; its table store goes beside it as
            ``<file>.store/``). None: a new temporary directory, named in the
            report. An existing non-empty path needs ``overwrite=True``.
        optimization_config: :class:`tiemb.OptimizeConfig` (parsed once into
            :class:`tiemb.settings.Settings`).
        overwrite: replace an existing non-empty ``save_path``.
        runs: timed calls of each model (after 5 untimed ones).
        seed: seed of the generated test data.
        progress: ``progress(stage)`` at each stage and ``progress("timing",
            done, total)`` during the timing, or None.

    Returns:
        (output_model, OptimizedReport): a SavedModel input gives the loaded
        optimized model object (``tf.saved_model.load``); a ``.pb`` or a
        GraphDef gives the optimized GraphDef.
    """
    if optimization_level not in (0, 1):
        raise OptimizeError(f"optimization_level must be 0 (lossless) or 1 (FP16), got {optimization_level!r}")
    device = device_of(device_type)
    notes = _device_notes(device)
    settings = _settings(optimization_config)
    if output_nodes_names is None and settings.output_names:
        output_nodes_names = list(settings.output_names)
    specs = parse_input_shapes(input_shapes)
    kind = kind_of(input_model)
    model = load_model(input_model, kind, input_nodes_names, output_nodes_names)
    by_name = data.match_specs(model, specs)
    data.check_spec_shapes(model, by_name, generated=test_data is None)
    rewritten, found = analyse(model)
    if test_data is None:
        data.check_generatable(model, found.lookups)
        batches = data.generate(model, by_name, found.lookups, np.random.default_rng(seed))
        source = "tiacc provided"
    else:
        batches = data.check_test_data(model, test_data)
        source = "user provided"
    sizes, inferred = engine_sizes(model, rewritten, found, batches, settings.sizes(), by_name)
    settings = settings.with_sizes(sizes)
    save_path, note = save.resolve_save_path(kind, save_path, overwrite)
    notes += [note] if note else []
    say = progress or (lambda *a: None)
    output_model, rewrite, accuracy, timing = _run_in_work_dir(
        model, settings, optimization_level, device, batches, save_path, runs, say, progress is not None)
    report = make_report(model=model, device=device, source=source, timed=batches[0], timing=timing,
                         accuracy=accuracy, rewrite=rewrite,
                         cache=cache_report(model, rewritten, found.lookups,
                                            batches if source == "user provided" else None, settings, device),
                         settings=settings, inferred=inferred, notes=notes)
    distributed = _publish_distributed(save_path, settings, model, found, batches, rewritten)
    if distributed:
        report.cache["distributed"] = distributed
    report_path = os.path.join(save_path, "tiemb_report.json") if kind == "saved_model" else save_path + ".report.json"
    report.save(report_path)
    report.notes.append(f"report saved to {report_path}")
    return output_model, report


def _publish_distributed(save_path, settings: Settings, model, found, batches, rewritten):
    """tiemb/enable_distributed: the optimized model's tables into the cluster
    (tiemb/distributed), host tier by the test data's traffic; else None."""
    if not settings.enable_distributed:
        return None
    from . import advise, distributed

    return distributed.publish_for_optimize(
        save_path, settings.as_dict(), lambda: advise.model_traffic(model, found.lookups, batches, rewritten)[1])


def _device_notes(device: str):
    """Notes about the serving target; OptimizeError for a GPU TensorFlow does not see."""
    if device != "gpu":
        return []
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        raise OptimizeError("device_type asks for a GPU but TensorFlow sees none here; use device_type=1 (CPU)")
    return ["the fused lookups are placed on the GPU: TiembLookup's GPU kernel on the GPU engine"]


def _settings(optimization_config) -> Settings:
    from .config import OptimizeConfig

    if optimization_config is not None and not isinstance(optimization_config, OptimizeConfig):
        raise OptimizeError(f"optimization_config must be a tiemb.OptimizeConfig, got "
                            f"{type(optimization_config).__name__}")
    return Settings.from_config(optimization_config)


def _run_in_work_dir(model, settings: Settings, level: int, device: str, batches, save_path: str, runs: int, say,
                     show_bar: bool):
    """Rewrite, into place, verify and time, in a work directory beside
    ``save_path`` that is removed afterwards (also on Ctrl-C and SIGTERM).
    Returns (output model, RewriteReport, accuracy, timing)."""
    # SIGTERM (a supervisor stopping the job) unwinds like Ctrl-C, so the
    # `finally` below removes the work directory; SIGKILL leaves it to the
    # next run's new_work_dir.
    guard = _files.terminate_as_interrupt()
    guard.__enter__()
    try:
        work = _files.new_work_dir(os.path.dirname(os.path.abspath(save_path)))
    except BaseException:
        guard.__exit__(None, None, None)
        raise
    try:
        say("optimizing")
        original_run = original_runner(model)
        staged, rewrite = stage(model, work, settings, level, device, batches, original_run)
        # An existing model is swapped out atomically, kept in `work` until the
        # new one has passed its check at save_path, and put back otherwise.
        moved = save.into_place(model.kind, staged, save_path)
        try:
            output_model, optimized_run = save.open_saved(model, save_path)
            accuracy = verify(original_run, optimized_run, batches, level, save_path)
        except BaseException:
            save.put_back(moved)
            raise
        say("timing")
        timing = measure.time_models(original_run, optimized_run, batches[0], runs, say if show_bar else None)
        return output_model, rewrite, accuracy, timing
    finally:
        shutil.rmtree(work, ignore_errors=True)
        guard.__exit__(None, None, None)


def inspect(input_model, input_nodes_names=None, output_nodes_names=None) -> dict:
    """Inputs, outputs and every embedding subgraph the rewriter finds (idiom,
    slot, table shape, combiner) and what it would leave alone; changes nothing."""
    kind = kind_of(input_model)
    model = load_model(input_model, kind, input_nodes_names, output_nodes_names)
    _, report = analyse(model)
    return {"kind": kind,
            "inputs": [{"name": n, "dtype": model.input_dtypes[n], "shape": model.input_shapes[n]}
                       for n in model.inputs],
            "outputs": model.outputs,
            "lookups": [{"slot": k, "idiom": lk["idiom"], "output": lk["output"], "table": lk["table"],
                         "table_shape": [lk["rows"], lk["dim"]], "dtype": lk["dtype"], "combiner": lk["combiner"],
                         "weighted": lk["weighted"], "feature": lk["feature"]} for k, lk in enumerate(report.lookups)],
            "features": report.features,
            "found": report.found, "replaceable": report.replaced, "left_alone": report.left_alone,
            "note": report.note}
