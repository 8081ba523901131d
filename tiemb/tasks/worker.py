"""The worker: runs queued tasks, each in its own process, ``jobs`` at a time.

Rules (README "Tasks"):

* A task is claimed in one transaction (queued -> starting), so several
  workers on one database never share a task.
* Each task runs as ``python -m tiemb.tasks.runner`` in a new process group;
  ``tasks stop`` marks the task stopped and this worker kills that group alone.
* A worker that ends (Ctrl-C, SIGTERM) kills its tasks and marks them failed
  "worker stopped". A worker that is killed outright cannot: its tasks end
  themselves when they see their parent gone, and the next worker to start
  (or any running worker, every few seconds) marks every task of a dead
  worker failed "worker stopped". A worker is dead when its process is gone
  (same host) or its heartbeat is older than ``STALE_S``. Such tasks are not
  re-run by themselves: ``tasks retry ID`` queues them again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, Optional

from .._files import process_alive
from .store import FAILED, QUEUED, RUNNING, STOPPED, Store

STALE_S = 30.0          # a worker silent this long is dead, wherever it ran
HEARTBEAT_S = 1.0
REAP_S = 3.0
KILL_GRACE_S = 2.0
EXIT_GRACE_S = 15.0     # a task that wrote its end gets this long to exit by itself


def reap_orphans(store: Store, me: Optional[str] = None) -> int:
    """Marks failed "worker stopped" every running task whose worker is dead;
    returns how many."""
    now, host = time.time(), socket.gethostname()
    # Tasks before workers: a worker registers before it claims, so every
    # running task read here has its worker in the list read next.
    tasks = [t for t in store.list() if t["state"] in RUNNING]
    workers = {w["id"]: w for w in store.workers()}
    dead = set()
    for w in workers.values():
        if w["id"] == me:
            continue
        if (w["host"] == host and not process_alive(w["pid"])) or now - w["heartbeat"] > STALE_S:
            dead.add(w["id"])
    n = 0
    for t in tasks:
        if t["worker"] != me and (t["worker"] not in workers or t["worker"] in dead):
            n += store.update(t["id"], when=RUNNING, state=FAILED, reason="worker stopped", ended=now)
    for w in dead:
        store.remove_worker(w)
    return n


def _kill_group(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        proc.wait()


class Worker:
    """Runs queued tasks of one database.

    Args:
        db: the database file.
        jobs: tasks run at the same time (each its own process).
        poll_s: how often the queue and the running tasks' states are read.
        exit_when_idle: return once nothing is queued or running (scripts, tests).
        exit_with_parent: stop (as on SIGTERM) when the process that started
            this one is gone (the worker of ``tiemb ui --jobs``).
        say: where the worker's own one-line messages go.
    """

    def __init__(self, db: str, jobs: int = 1, poll_s: float = 0.2, exit_when_idle: bool = False,
                 exit_with_parent: bool = False, say=print):
        if jobs < 1:
            raise ValueError(f"--jobs must be at least 1, got {jobs}")
        self.store = Store(db)
        self.jobs, self.poll_s, self.exit_when_idle, self.say = jobs, poll_s, exit_when_idle, say
        self.id = f"{socket.gethostname()}:{os.getpid()}:{int(time.time() * 1000)}"
        self.children: Dict[int, subprocess.Popen] = {}
        self._stopping = False
        self._parent = os.getppid() if exit_with_parent else None
        self._ended: Dict[int, float] = {}
        self.attempt: Dict[int, int] = {}

    def _spawn(self, task: dict) -> subprocess.Popen:
        os.makedirs(os.path.dirname(task["log_path"]), exist_ok=True)
        with open(task["log_path"], "a") as log:
            # Run where the database lives: `python -m` puts the working directory first on sys.path, and a
            # tiemb source tree there (a checkout without its compiled core) must not shadow the installed one.
            db = os.path.abspath(self.store.path)
            proc = subprocess.Popen([sys.executable, "-m", "tiemb.tasks.runner", db, str(task["id"]),
                                     self.id], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=os.path.dirname(db))
        self.store.update(task["id"], pid=proc.pid)
        self.say(f"task {task['id']} {task['name']}: started (pid {proc.pid})")
        return proc

    def _check_children(self):
        for tid, proc in list(self.children.items()):
            try:
                t = self.store.get(tid)
            except ValueError:
                t = None
            # Still this worker's attempt? A stopped task may have been
            # retried (and claimed again) before its old process was reaped.
            ours = t is not None and t["worker"] == self.id and t["attempts"] == self.attempt[tid]
            if proc.poll() is not None:
                del self.children[tid]
                if ours and t["state"] in RUNNING:  # it died without saying why
                    self.store.update(tid, when=RUNNING, match={"worker": self.id, "attempts": t["attempts"]},
                                      state=FAILED, ended=time.time(),
                                      reason=f"the task's process exited with code {proc.returncode}; see its log")
                    t = self.store.get(tid)
                self.say(f"task {tid}: {t['state'] if t else 'deleted'}"
                         + (f" ({t['reason']})" if t and t["reason"] else ""))
            elif not ours or t["state"] in (STOPPED, QUEUED):
                _kill_group(proc)
                del self.children[tid]
                self.say(f"task {tid}: {t['state'] if t else 'deleted'}, its process killed")
            elif t["state"] not in RUNNING:
                # It wrote its own end (done/failed) and is exiting; only one that hangs on is killed.
                since = self._ended.setdefault(tid, time.monotonic())
                if time.monotonic() - since > EXIT_GRACE_S:
                    _kill_group(proc)
                    del self.children[tid]
                    self.say(f"task {tid}: {t['state']}, its process killed after {EXIT_GRACE_S:.0f} s")

    def _shutdown(self, *_):
        self._stopping = True

    def run(self) -> int:
        """Runs until SIGINT/SIGTERM (or, with ``exit_when_idle``, an empty queue)."""
        old = {s: signal.signal(s, self._shutdown) for s in (signal.SIGINT, signal.SIGTERM)}
        self.store.register_worker(self.id, socket.gethostname(), os.getpid(), self.jobs)
        n = reap_orphans(self.store, self.id)
        self.say(f"tiemb tasks worker {self.id}: {self.store.path}, {self.jobs} job(s)"
                 + (f"; {n} task(s) of a stopped worker marked failed" if n else ""))
        beat = reap = time.monotonic()
        try:
            while not self._stopping:
                self._check_children()
                while len(self.children) < self.jobs and not self._stopping:
                    task = self.store.claim(self.id)
                    if task is None:
                        break
                    self.children[task["id"]] = self._spawn(task)
                    self.attempt[task["id"]] = task["attempts"]
                    self._ended.pop(task["id"], None)
                now = time.monotonic()
                if now - beat >= HEARTBEAT_S:
                    self.store.heartbeat(self.id)
                    beat = now
                if now - reap >= REAP_S:
                    reap_orphans(self.store, self.id)
                    reap = now
                if self._parent is not None and os.getppid() != self._parent:
                    self.say("the process that started this worker is gone; stopping")
                    break
                if self.exit_when_idle and not self.children and not self.store.list(state="queued"):
                    break
                time.sleep(self.poll_s)
        finally:
            for tid, proc in list(self.children.items()):
                _kill_group(proc)
                self.store.update(tid, when=RUNNING, match={"worker": self.id, "attempts": self.attempt[tid]},
                                  state=FAILED, reason="worker stopped", ended=time.time())
                self.say(f"task {tid}: failed (worker stopped)")
            self.store.remove_worker(self.id)
            for s, h in old.items():
                signal.signal(s, h)
        return 0
