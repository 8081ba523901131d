"""Wall time of one ``tiemb.optimize()`` call, for two source trees side by side.

    python benchmarks/optimize_wall.py OLD_TREE NEW_TREE [--pairs 7]

Each tree is a tiemb checkout with its extension built in place. Builds the
tiny Wide&Deep once, then alternates fresh processes (old, new, old, ...)
that each optimize it (level 0, CPU, generated data, 5 timed runs) and
report their wall seconds and how many times they called
``tf.saved_model.load``. Prints the medians and the machine.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ONE = r"""
import json, sys, time
import tensorflow as tf
loads = []
real = tf.saved_model.load
def counting(p, *a, **k):
    loads.append(str(p))
    return real(p, *a, **k)
tf.saved_model.load = counting
import tiemb
t0 = time.perf_counter()
tiemb.optimize(sys.argv[1], 0, 1, [{"range": ["1*26", "512*26"], "int": True}, {"range": ["1*13", "512*13"]}],
               save_path=sys.argv[2], overwrite=True, runs=5)
print(json.dumps({"seconds": time.perf_counter() - t0, "loads": len(loads)}))
"""


def _run(tree: str, code: str, *args) -> str:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd="/")
    if proc.returncode:
        raise RuntimeError(f"{tree}: {proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--pairs", type=int, default=7)
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="tiemb-wall-")
    model = os.path.join(work, "wd")
    _run(args.new, "import sys\nfrom tiemb.bench import models\n"
                   "models.wide_deep(sys.argv[1], models.vocab_for('tiny'), tower=(64, 64), seed=1)", model)
    got = {"old": [], "new": []}
    for _ in range(args.pairs):
        for name in ("old", "new"):
            got[name].append(json.loads(_run(getattr(args, name), ONE, model, os.path.join(work, name))))
    sys.path.insert(0, os.path.abspath(args.new))
    from tiemb.timing import machine_name

    print(f"machine: {machine_name()}; {args.pairs} alternating pairs of fresh processes")
    for name, rows in got.items():
        s = [r["seconds"] for r in rows]
        print(f"{name}: median {statistics.median(s):.2f} s (min {min(s):.2f}, max {max(s):.2f}); "
              f"tf.saved_model.load calls {sorted({r['loads'] for r in rows})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
