"""The `tiemb` command line.

    tiemb bench [--nnz 1,10] [--batch 512] [--vocab 100000] [--dim 16] [--slots 26] [--json OUT]
    tiemb info

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


def _positive_int(text: str) -> int:
    (v,) = _int_list(text)
    return v


def _cmd_bench(args) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
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


def _cmd_info(_args) -> int:
    import tiemb

    print(json.dumps(tiemb.build_info(), indent=2))
    return 0


def _version() -> str:
    from ._version import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tiemb", description="Fused, cache-tiered embedding lookups for TF models")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time TensorFlow's embedding lookups against tiemb's on this machine")
    b.add_argument("--batch", type=_int_list, default=[512], help="batch sizes, comma-separated (default 512)")
    b.add_argument("--nnz", type=_int_list, default=[1, 10], help="ids per sample and slot (default 1,10)")
    b.add_argument("--slots", type=_positive_int, default=26, help="feature slots (default 26)")
    b.add_argument("--vocab", type=_positive_int, default=100_000, help="rows per table (default 100000)")
    b.add_argument("--dim", type=_positive_int, default=16, help="embedding dimension (default 16)")
    b.add_argument("--rounds", type=_positive_int, default=30, help="timing rounds of 10 calls (default 30)")
    b.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    b.set_defaults(func=_cmd_bench)
    i = sub.add_parser("info", help="print what this build contains (CUDA part, TF op library)")
    i.set_defaults(func=_cmd_info)
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
