"""``tiemb export MODEL --bundle DIR``: the command-line face of export_bundle."""

from __future__ import annotations

import json
import os


def add_parser(sub, int_list, input_shapes, config) -> None:
    """Adds the ``export`` subcommand (``int_list``, ``input_shapes``,
    ``config``: tiemb.cli's parsers of --batch, --input-shapes and --config/--param)."""
    e = sub.add_parser("export", help="write a bundle that serves the optimized model without TensorFlow "
                                      "(GPU engine + XLA on a GPU host; the CPU engine + XLA elsewhere)")
    e.add_argument("model", help="SavedModel directory (original, or already optimized by tiemb)")
    e.add_argument("--bundle", required=True, metavar="DIR", help="output bundle directory (replaced)")
    e.add_argument("--batch", type=int_list, help="batch buckets, comma-separated (default from --input-shapes, "
                                                  "else 1,64,512,4096)")
    e.add_argument("--level", type=int, choices=[0, 1], default=0, help="0 lossless (default), 1 FP16 tables/BF16")
    e.add_argument("--baseline", action="store_true", help="also lower the original whole graph, where XLA can")
    e.add_argument("--input-shapes", nargs="+", metavar="SPEC", help="as for `tiemb optimize`")
    e.add_argument("--test-data", metavar="NPZ", help="test feeds: an .npz with one array per model input")
    e.add_argument("--config", metavar="cfg.json", help="tiemb/* parameters as a JSON object")
    e.add_argument("--param", action="append", metavar="KEY=VALUE", help="one tiemb/* parameter (repeatable)")
    e.set_defaults(func=lambda args: run(args, input_shapes, config))


def run(args, input_shapes, config) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    from ..shapes import parse_input_shapes
    from .export import export_bundle

    shapes = parse_input_shapes(input_shapes(args.input_shapes)) if args.input_shapes else None
    test_data = None
    if args.test_data:
        with np.load(args.test_data, allow_pickle=False) as f:
            test_data = {k: f[k] for k in f.files}
    meta = export_bundle(args.model, args.bundle, batch_sizes=args.batch, level=args.level,
                         optimization_config=config(args), test_data=test_data, baseline=args.baseline,
                         input_shapes=shapes)
    slots = sum(len(op["slots"]) for op in meta["ops"])
    print(f"bundle {args.bundle}: buckets {meta['buckets']}, level {meta['level']}, {slots} slots in "
          f"{len(meta['ops'])} lookup op(s), {len(meta['dense']['weights'])} weight arrays")
    v = meta.get("verified", {})
    if v.get("checked"):
        print(f"verified on the CPU (jax): max relative difference vs TensorFlow {v['max_rel_diff']:.2e}")
    else:
        print(f"not verified: {v.get('reason', 'verification off')}")
    if meta.get("baseline"):
        b = meta["baseline"]
        print("baseline (original whole graph):", "lowered" if "modules" in b else f"not lowered: {b['reason']}")
    print(json.dumps({"inputs": meta["inputs"], "outputs": meta["outputs"]}))
    return 0
