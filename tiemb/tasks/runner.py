"""One task, in its own process: ``python -m tiemb.tasks.runner DB ID WORKER``.

The worker starts this in a new session (process group) with stdout and
stderr going to the task's log, so stopping the task kills this process alone.
Every state write is conditional on the task still running for this worker:
a task stopped meanwhile is never turned into "done" or "failed".
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import traceback

from .store import ACCELERATING, DONE, FAILED, RUNNING, STARTING, Store

# Progress: 0-10 % loading TensorFlow and the model, 10-15 % rewriting and
# checking, 15-95 % the timing runs, 100 % done.
_TIMING_FROM, _TIMING_TO = 15.0, 95.0


def _exit_with_parent(parent: int):
    """A worker killed with SIGKILL cannot stop its tasks; each task ends
    itself when its parent is gone (the restarted worker then marks it
    failed "worker stopped")."""
    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)
    threading.Thread(target=watch, daemon=True).start()


class _Progress:
    def __init__(self, store: Store, task_id: int, mine: dict):
        self.store, self.id, self.mine, self.last = store, task_id, mine, 0.0

    def __call__(self, stage, done=None, total=None):
        if done is None:
            print(f"{time.strftime('%H:%M:%S')} {stage}", flush=True)
            fields = {"stage": stage, "progress": 10.0}
            if stage == "optimizing":
                fields["state"] = ACCELERATING
            elif stage == "timing":
                fields["progress"] = _TIMING_FROM
            self.store.update(self.id, when=RUNNING, match=self.mine, **fields)
            return
        now = time.monotonic()
        if done == total or now - self.last > 0.25:  # a write per quarter second at most
            self.last = now
            pct = _TIMING_FROM + (_TIMING_TO - _TIMING_FROM) * done / total
            self.store.update(self.id, when=RUNNING, match=self.mine, stage=f"timing {done}/{total}", progress=pct)


def run(db: str, task_id: int, worker: str) -> int:
    store = Store(db)
    t = store.get(task_id)
    if t["state"] != STARTING or t["worker"] != worker:
        print(f"task {task_id} is {t['state']} for worker {t['worker']}, not starting for {worker}; not run")
        return 0
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} task {task_id} {t['name']}: attempt {t['attempts']}, "
          f"model {t['model_path']}, level {t['level']}, device {t['device']}, runs {t['runs']}", flush=True)
    # Every write below is for this attempt of this worker only: a process
    # left over from an earlier attempt never touches a later one.
    mine = {"worker": worker, "attempts": t["attempts"]}
    store.update(task_id, when=RUNNING, match=mine, stage="loading", progress=5.0)
    try:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        from ..config import OptimizeConfig
        from ..optimizer import optimize

        save = t["output_path"]
        if os.path.isfile(t["model_path"]):  # a frozen graph gives a .pb; keep one folder per task anyway
            save = os.path.join(save, os.path.basename(t["model_path"]))
        _, report = optimize(t["model_path"], t["level"], t["device"], t["tensor_info"], save_path=save,
                             optimization_config=OptimizeConfig.from_dict(t["config"]),
                             overwrite=t["attempts"] > 1, runs=t["runs"], progress=_Progress(store, task_id, mine))
    except Exception as e:
        traceback.print_exc()
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        store.update(task_id, when=RUNNING, match=mine, state=FAILED, reason=f"{type(e).__name__}: {reason}",
                     ended=time.time())
        return 1
    data = report.to_dict()
    print(report, flush=True)
    ok = store.update(task_id, when=RUNNING, match=mine, state=DONE, stage="done", progress=100.0,
                      speedup=float(data["timing"]["speedup"]), report=json.dumps(data, default=str),
                      ended=time.time())
    print(f"{time.strftime('%H:%M:%S')} " + ("done" if ok else "finished, but the task was stopped meanwhile"),
          flush=True)
    return 0


def main(argv=None) -> int:
    db, task_id, worker = (argv or sys.argv[1:])[:3]
    _exit_with_parent(os.getppid())
    return run(db, int(task_id), worker)


if __name__ == "__main__":
    sys.exit(main())
