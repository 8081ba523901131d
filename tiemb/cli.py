"""The `tiemb` command line.

    tiemb optimize MODEL --save OUT [--level 0|1] [--device cpu|gpu] [--input-shapes SPEC ...]
                   [--config cfg.json | --param tiemb/cache_percentage=0.2 ...] [--overwrite] [--runs 50]
    tiemb inspect MODEL
    tiemb check MODEL
    tiemb bench [--model wd|deepfm|dlrm|all|layer] [--batch 1,8,64,512,4096] [--level 0,1] [--device cpu]
                [--scale tiny|small|full] [--runs 30] [--json OUT] [--plot OUT.png]
    tiemb info
    tiemb advise MODEL_OR_STORE --traffic FILE.npz [--target-hit-rate 0.95] [--plot OUT.png] [--json OUT]
    tiemb tasks submit|list|show|stop|retry|delete|tag|save|worker ...   (see tiemb/tasks/cli.py)
    tiemb ui [--port P]

Exit codes: 0 ok; 2 bad arguments; 1 any other failure, with a one-line reason.
"""

import argparse
import json
import os
import sys


def _int_list(text: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _level_list(text: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(v not in (0, 1) for v in values):
        raise argparse.ArgumentTypeError(f"levels are 0 and/or 1, comma-separated; got {text!r}")
    return values


def _positive_int(text: str) -> int:
    (v,) = _int_list(text)
    return v


def _bench_device(text: str) -> str:
    """--device of `tiemb bench`: cpu only, refused while parsing otherwise."""
    if text == "cpu":
        return text
    if text == "gpu":
        raise argparse.ArgumentTypeError(
            "gpu is not supported by `tiemb bench`: the reference models' lookups (Keras gathers, feature "
            "columns) are not served by the TiembLookup GPU kernel; measure a GPU with benchmarks/gpu_suite.sh "
            "(exported bundles)")
    raise argparse.ArgumentTypeError(f"expected cpu, got {text!r}")


def _cmd_bench(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.model == "layer":
        return _bench_layer(args)
    from .bench import model_bench

    names = ["wd", "deepfm", "dlrm"] if args.model == "all" else [args.model]
    import tensorflow as tf

    print(f"tiemb {_version()} bench: {', '.join(names)}, batch {','.join(map(str, args.batch))}, level "
          f"{','.join(map(str, args.level))}, {args.scale} vocabularies; machine: {model_bench.machine_name()}; "
          f"TensorFlow {tf.__version__}; original vs optimized SavedModel alternating in one process, "
          f"{args.runs} runs each after warm-up, medians", flush=True)
    rows = []
    for name in names:
        rows += model_bench.bench_model(name, batches=args.batch, levels=args.level, scale=args.scale,
                                        runs=args.runs, small=args.small_models,
                                        progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    print(model_bench.format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": model_bench.machine_name(), "tensorflow": tf.__version__, "tiemb": _version(),
                       "rows": [r.as_dict() for r in rows]}, f, indent=2)
    if args.plot:
        model_bench.plot(rows, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def _bench_layer(args) -> int:
    from .bench import embedding

    cases = [embedding.EmbeddingCase(batch=b, slots=args.slots, vocab=args.vocab, dim=args.dim, nnz=n)
             for b in args.batch for n in args.nnz]
    print(f"tiemb {_version()} bench: embedding layer, TensorFlow vs tiemb, side by side", flush=True)
    results = embedding.run(cases, rounds=args.rounds)
    print(embedding.format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": embedding.machine_name(), "results": results}, f, indent=2)
    return 0


def _input_shapes(values):
    """--input-shapes: tensor-info lines (name:dtype(shape)), seed-000 size
    strings, or one JSON list (seed 000's dict forms)."""
    if len(values) == 1 and values[0].lstrip().startswith("["):
        try:
            return json.loads(values[0])
        except json.JSONDecodeError as e:
            raise ValueError(f"--input-shapes: not valid JSON: {e}") from None
    return list(values)


def _config(args):
    from .config import OptimizeConfig

    if args.config and args.param:
        raise ValueError("give --config or --param, not both")
    if args.config:
        try:
            with open(args.config) as f:
                return OptimizeConfig.from_dict(json.load(f))
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"--config {args.config}: {e}") from None
    return OptimizeConfig.from_params(args.param or [])


class _Progress:
    """Progress lines, and a bar for the timing runs, on stderr."""

    def __init__(self):
        self.last = None

    def __call__(self, stage, done=None, total=None):
        if done is None:
            if self.last == "bar":
                sys.stderr.write("\n")
            print(f"tiemb optimize: {stage}...", file=sys.stderr, flush=True)
            self.last = stage
            return
        width = 30
        filled = width * done // total
        sys.stderr.write(f"\r  timing [{'#' * filled}{'.' * (width - filled)}] {done}/{total} runs")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
        self.last = "bar" if done < total else None


def _cmd_optimize(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from .optimizer import optimize

    if args.input_shapes is None:
        raise ValueError("--input-shapes is required (e.g. 'dense:float(512*13)' 'cat:int64(512*26)'); "
                         "`tiemb inspect MODEL` lists the inputs")
    _, report = optimize(args.model, args.level, args.device, _input_shapes(args.input_shapes),
                         save_path=args.save, optimization_config=_config(args), overwrite=args.overwrite,
                         runs=args.runs, progress=_Progress())
    print(report)
    return 0


def _cmd_inspect(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from .optimizer import inspect

    print(json.dumps(inspect(args.model), indent=2))
    return 0


def _cmd_check(args) -> int:
    from .check import check_model

    store, problems = check_model(args.model)
    for p in problems:
        print(f"tiemb check: {p}")
    if problems:
        return 1
    from . import _C

    m = _C.read_store_manifest(store)
    total = sum(m["file_bytes"])
    print(f"tiemb check: {args.model}: sound ({len(m['tables'])} tables, {total / 1e6:.1f} MB, checksums match)")
    return 0


def _cmd_info(_args) -> int:
    import tiemb

    print(json.dumps(tiemb.build_info(), indent=2))
    return 0


def _cmd_advise(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from . import advise

    report = advise.advise(args.model, args.traffic, args.target_hit_rate, args.cpu_cache_percentage,
                           args.batch_ids, args.policies)
    print(advise.format_table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    if args.plot:
        advise.plot(report, args.plot)
    return 0


def _version() -> str:
    from ._version import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tiemb", description="Fused, cache-tiered embedding lookups for TF models")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="reference models (W&D, DeepFM, DLRM): original vs optimized on this machine")
    b.add_argument("--model", choices=["wd", "deepfm", "dlrm", "all", "layer"], default="wd",
                   help="reference model, all three, or 'layer': the embedding layer alone (default wd)")
    b.add_argument("--batch", type=_int_list, default=[512], help="batch sizes, comma-separated (default 512)")
    b.add_argument("--level", type=_level_list, default=[0, 1], help="optimization levels (default 0,1)")
    b.add_argument("--device", type=_bench_device, default="cpu",
                   help="cpu (the only device the harness measures; GPU numbers: benchmarks/gpu_suite.sh)")
    b.add_argument("--scale", choices=["tiny", "small", "full"], default="small",
                   help="vocabulary sizes: tiny (hundreds), small (up to 100k rows), full (up to 2M)")
    b.add_argument("--runs", type=_positive_int, default=30, help="timed runs per measurement (default 30)")
    b.add_argument("--small-models", action="store_true", help="small dense towers (quick checks)")
    b.add_argument("--plot", metavar="OUT.png", help="latency and speedup against batch size (needs matplotlib)")
    b.add_argument("--nnz", type=_int_list, default=[1, 10], help="layer only: ids per sample and slot (1,10)")
    b.add_argument("--slots", type=_positive_int, default=26, help="layer only: feature slots (default 26)")
    b.add_argument("--vocab", type=_positive_int, default=100_000, help="layer only: rows per table (100000)")
    b.add_argument("--dim", type=_positive_int, default=16, help="layer only: embedding dimension (default 16)")
    b.add_argument("--rounds", type=_positive_int, default=30, help="layer only: rounds of 10 calls (default 30)")
    b.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    b.set_defaults(func=_cmd_bench)
    o = sub.add_parser("optimize", help="optimize a SavedModel or frozen graph, check it, time it, report")
    o.add_argument("model", help="SavedModel directory or frozen graph .pb")
    o.add_argument("--save", required=True, metavar="OUT", help="output SavedModel directory or .pb file")
    o.add_argument("--level", type=int, choices=[0, 1], default=0, help="0 lossless (default), 1 FP16/BF16")
    o.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where it will be served (default cpu)")
    o.add_argument("--input-shapes", nargs="+", metavar="SPEC",
                   help="per input 'name:dtype(shape)' (seed 001), or sizes like 512*26 (seed 000), or a JSON list")
    o.add_argument("--config", metavar="cfg.json", help="tiemb/* parameters as a JSON object")
    o.add_argument("--param", action="append", metavar="KEY=VALUE", help="one tiemb/* parameter (repeatable)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    o.add_argument("--runs", type=_positive_int, default=50, help="timed runs of each model (default 50)")
    o.set_defaults(func=_cmd_optimize)
    n = sub.add_parser("inspect", help="list inputs, outputs and the embedding lookups found; change nothing")
    n.add_argument("model", help="SavedModel directory or frozen graph .pb")
    n.set_defaults(func=_cmd_inspect)
    c = sub.add_parser("check", help="check an optimized model's table store: every file present, of the right "
                                     "size, its CRC32C matching (exit 1 and one line per problem otherwise)")
    c.add_argument("model", help="optimized SavedModel directory, frozen graph .pb, or a table store directory")
    c.set_defaults(func=_cmd_check)
    from .serving.cli import add_parser as add_export

    add_export(sub, _int_list, _input_shapes, _config)
    i = sub.add_parser("info", help="print what this build contains (CUDA part, TF op library)")
    i.set_defaults(func=_cmd_info)
    a = sub.add_parser("advise", help="GPU cache size per table from recorded traffic: hit rate and GPU memory")
    a.add_argument("model", metavar="MODEL_OR_STORE", help="table store directory, SavedModel or frozen .pb")
    a.add_argument("--traffic", required=True, metavar="FILE.npz", help="recorded ids (layout: tiemb/advise.py)")
    a.add_argument("--target-hit-rate", type=float, default=0.95, help="GPU cache hit rate to reach (0.95)")
    a.add_argument("--cpu-cache-percentage", type=float, help="host tier share (default: the store's, else 1)")
    a.add_argument("--batch-ids", type=_positive_int, help="batch length for 1-D traffic arrays")
    a.add_argument("--policies", action="store_true", help="also LFU and LRU+admission hit rates (simulated)")
    a.add_argument("--plot", metavar="OUT.png", help="hit rate against cache_percentage (needs matplotlib)")
    a.add_argument("--json", metavar="OUT", help="also write the advice as JSON")
    a.set_defaults(func=_cmd_advise)
    from .tasks.cli import add_parsers as add_task_parsers

    add_task_parsers(sub)
    from .distributed.cli import add_parsers as add_distributed_parsers

    add_distributed_parsers(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one line for the person at the terminal
        print(f"tiemb {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
