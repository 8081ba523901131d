"""``tiemb tasks ...`` and ``tiemb ui``: argument parsing and printing over
:mod:`tiemb.tasks` (kept free of TensorFlow and Flask imports, so the
commands start at once)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from . import actions
from .actions import log_tail
from .store import STATES, Store, default_db
from .submit import parse_tags, read_config_file, submit


def _store(args) -> Store:
    return Store(args.db)


def _fmt_progress(t: dict) -> str:
    return f"{t['progress']:.0f}%"


def _fmt_speedup(t: dict) -> str:
    return f"{t['speedup']:.2f}x" if t["speedup"] is not None else "-"


def _fmt_tags(t: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(t["tags"].items())) or "-"


def _cmd_submit(args) -> int:
    ids = submit(_store(args), args.name, args.model, args.tensor_info, args.save_root, level=args.level,
                 device=args.device, config=read_config_file(args.config), tags=parse_tags(args.tag), runs=args.runs,
                 tensor_info_files=True)
    store = _store(args)
    for i in ids:
        t = store.get(i)
        print(f"{i}\t{t['name']}\t{t['model']}\t{t['version']}\tqueued")
    return 0


def _cmd_list(args) -> int:
    tasks = _store(args).list(state=args.state, tags=parse_tags(args.tag))
    if args.json:
        print(json.dumps(tasks, indent=2, default=str))
        return 0
    rows = [("ID", "NAME", "MODEL", "VERSION", "STATE", "PROGRESS", "SPEEDUP", "TAGS")]
    rows += [(str(t["id"]), t["name"], t["model"], t["version"], t["state"], _fmt_progress(t), _fmt_speedup(t),
              _fmt_tags(t)) for t in tasks]
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def _cmd_show(args) -> int:
    t = _store(args).get(args.id)
    if args.json:
        print(json.dumps(dict(t, log_tail=log_tail(t["log_path"], args.log_lines)), indent=2, default=str))
        return 0
    when = lambda s: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s)) if s else "-"  # noqa: E731
    print(f"task {t['id']}: {t['name']}")
    for k in ("state", "reason", "stage"):
        if t[k]:
            print(f"  {k}: {t[k]}")
    print(f"  progress: {_fmt_progress(t)}   speedup: {_fmt_speedup(t)}   attempts: {t['attempts']}")
    print(f"  model: {t['model']} version {t['version']} ({t['model_path']})")
    print(f"  level: {t['level']}   device: {t['device']}   runs: {t['runs']}   tags: {_fmt_tags(t)}")
    print(f"  config: {json.dumps(t['config'])}")
    print("  tensor info:\n" + "".join(f"    {line}\n" for line in t["tensor_info"].splitlines()), end="")
    print(f"  output: {t['output_path']}\n  log: {t['log_path']}")
    print(f"  created {when(t['created'])}, started {when(t['started'])}, ended {when(t['ended'])}")
    if t["report"]:
        print("report:\n" + json.dumps(t["report"], indent=2, default=str))
    tail = log_tail(t["log_path"], args.log_lines)
    if tail:
        print(f"log (last {args.log_lines} lines):\n{tail}", end="" if tail.endswith("\n") else "\n")
    return 0


def _cmd_stop(args) -> int:
    store = _store(args)
    for i in args.id:
        print(f"{i}\t{actions.stop(store, i)}")
    return 0


def _cmd_retry(args) -> int:
    config = read_config_file(args.config) if args.config else None
    t = actions.retry(_store(args), args.id, level=args.level, tensor_info=args.tensor_info, device=args.device,
                      runs=args.runs, config=config, tensor_info_files=True)
    print(f"{t['id']}\t{t['name']}\t{t['state']}")
    return 0


def _cmd_delete(args) -> int:
    store = _store(args)
    for i in args.id:
        t = actions.delete(store, i)
        print(f"{i}\t{t['name']}\tdeleted")
    return 0


def _cmd_tag(args) -> int:
    tags = actions.tag(_store(args), args.id, parse_tags(args.pairs), remove=args.remove or ())
    print(f"{args.id}\t" + (",".join(f"{k}={v}" for k, v in sorted(tags.items())) or "-"))
    return 0


def _cmd_save(args) -> int:
    print(actions.save(_store(args), args.id, args.repository))
    return 0


def _cmd_worker(args) -> int:
    from .worker import Worker

    return Worker(args.db or default_db(), jobs=args.jobs, exit_when_idle=args.exit_when_idle,
                  exit_with_parent=args.exit_with_parent, say=lambda m: print(m, flush=True)).run()


def _cmd_ui(args) -> int:
    try:
        import flask  # noqa: F401
    except ImportError:
        raise ValueError("the web page needs Flask: pip install 'tiemb[ui]' (or pip install flask)") from None
    import signal
    import subprocess

    from .web import serve

    # SIGTERM ends the page like Ctrl-C does, so the worker below is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    db = args.db or default_db()
    worker = None
    if args.jobs:  # a convenience: the same worker as `tiemb tasks worker`, in its own process
        db = os.path.abspath(db)     # and run where it lives: see the worker's own processes
        worker = subprocess.Popen([sys.executable, "-m", "tiemb", "tasks", "worker", "--db", db, "--jobs",
                                   str(args.jobs), "--exit-with-parent"], cwd=os.path.dirname(db))
    try:
        return serve(db, host=args.host, port=args.port)
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait()


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def add_parsers(sub) -> None:
    """Adds ``tasks`` (with its subcommands) and ``ui`` to the top-level parser."""
    db_help = f"task database (default {default_db()}; $XDG_DATA_HOME moves it)"
    p = sub.add_parser("tasks", help="queue optimize jobs and follow, stop, retry, delete, tag and save them")
    ts = p.add_subparsers(dest="tasks_command", required=True)

    def cmd(name, func, help):
        c = ts.add_parser(name, help=help)
        c.add_argument("--db", help=db_help)
        c.set_defaults(func=func)
        return c

    s = cmd("submit", _cmd_submit, "queue one task per model version")
    s.add_argument("--name", required=True, help="task name; several versions give NAME-<model>-<version>#<n>")
    s.add_argument("--model", action="append", required=True, metavar="PATH[@VERSION,...]",
                   help="SavedModel dir, TF Serving model folder (1/, 2/, ...) or .pb; repeatable")
    s.add_argument("--tensor-info", nargs="+", metavar="LINES_OR_FILE",
                   help="seed 001 lines 'element:dtype(shape)', or files of them")
    s.add_argument("--level", type=int, choices=[0, 1], default=0, help="0 lossless (default), 1 FP16")
    s.add_argument("--device", choices=["cpu", "gpu"], default="cpu", help="where it will be served (default cpu)")
    s.add_argument("--config", metavar="cfg.json", help="tiemb/* parameters as a JSON object")
    s.add_argument("--tag", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    s.add_argument("--runs", type=_positive, default=50, help="timed runs of each model (default 50)")
    s.add_argument("--save-root", required=True, metavar="DIR",
                   help="where optimized models go (DIR/<id>-<name>); may not overlap a model's directory")
    ls = cmd("list", _cmd_list, "the tasks, oldest first")
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--tag", action="append", metavar="KEY=VALUE", help="only tasks with this tag (repeatable)")
    ls.add_argument("--json", action="store_true", help="every field, as JSON")
    sh = cmd("show", _cmd_show, "one task: settings, report, log tail")
    sh.add_argument("id", type=int)
    sh.add_argument("--log-lines", type=_positive, default=20)
    sh.add_argument("--json", action="store_true")
    st = cmd("stop", _cmd_stop, "stop queued or running tasks (kills only their processes)")
    st.add_argument("id", type=int, nargs="+")
    r = cmd("retry", _cmd_retry, "queue a failed or stopped task again, with edited settings")
    r.add_argument("id", type=int)
    r.add_argument("--level", type=int, choices=[0, 1])
    r.add_argument("--tensor-info", nargs="+", metavar="LINES_OR_FILE")
    r.add_argument("--device", choices=["cpu", "gpu"])
    r.add_argument("--runs", type=_positive)
    r.add_argument("--config", metavar="cfg.json")
    d = cmd("delete", _cmd_delete, "delete tasks that are not running, with their outputs and logs")
    d.add_argument("id", type=int, nargs="+")
    tg = cmd("tag", _cmd_tag, "set (key=value) or remove (--remove key) tags")
    tg.add_argument("id", type=int)
    tg.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    tg.add_argument("--remove", action="append", metavar="KEY")
    sv = cmd("save", _cmd_save, "copy a done task's model to REPOSITORY/<model>/<version>/")
    sv.add_argument("id", type=int)
    sv.add_argument("--repository", required=True, metavar="DIR")
    w = cmd("worker", _cmd_worker, "run queued tasks, each in its own process, until Ctrl-C")
    w.add_argument("--jobs", type=_positive, default=1, help="tasks at a time (default 1)")
    w.add_argument("--exit-when-idle", action="store_true", help="return when nothing is queued or running")
    w.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)  # `tiemb ui --jobs`

    u = sub.add_parser("ui", help="the task list as a web page, with a JSON API (needs flask: tiemb[ui])")
    u.add_argument("--db", help=db_help)
    u.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    u.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    u.add_argument("--jobs", type=int, default=0,
                   help="also run a worker with this many jobs (default 0: run `tiemb tasks worker` yourself)")
    u.set_defaults(func=_cmd_ui)
