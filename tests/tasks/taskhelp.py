"""Helpers of the task tests: the command line as a person runs it (a separate
process per command), a worker process, and a way to wait for states."""

import json
import os
import signal
import subprocess
import sys
import time

TENSOR_INFO = "dense:float(1*13,32*13)\ncat:int64(1*26,32*26)"
LONG_RUNS = "1000000"   # a task that stays "accelerating" until it is stopped


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    # The tasks' processes import the same tiemb as this test process.
    import tiemb

    pkg_parent = os.path.dirname(os.path.dirname(tiemb.__file__))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Tasks:
    """``tiemb tasks ...`` on one database, each call its own process."""

    def __init__(self, db):
        self.db = str(db)
        self.env = _env()
        self.workers = []
        # Out of the source tree: `python -m` would import its uncompiled tiemb/ first.
        self.cwd = os.path.dirname(os.path.abspath(self.db))

    def run(self, *args, check=True, timeout=60):
        cmd = [sys.executable, "-m", "tiemb", *args]
        if args[0] == "tasks":
            cmd += ["--db", self.db]
        p = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout, cwd=self.cwd)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
        return p

    def __call__(self, *args, **kw):
        return self.run("tasks", *args, **kw)

    def list(self, *args):
        return json.loads(self("list", "--json", *args).stdout)

    def get(self, task_id):
        return json.loads(self("show", str(task_id), "--json").stdout)

    def submit(self, name, *models, runs="3", extra=(), save_root=None, info=TENSOR_INFO):
        args = ["submit", "--name", name, "--tensor-info", info, "--runs", runs,
                "--save-root", save_root or os.path.join(os.path.dirname(self.db), "out")]
        for m in models:
            args += ["--model", m]
        out = self(*args, *extra).stdout
        return [int(line.split("\t")[0]) for line in out.splitlines()]

    def start_worker(self, jobs=1, log=None):
        log = open(log or os.path.join(os.path.dirname(self.db), f"worker{len(self.workers)}.log"), "w")
        p = subprocess.Popen([sys.executable, "-m", "tiemb", "tasks", "worker", "--db", self.db, "--jobs", str(jobs)],
                             stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd)
        self.workers.append(p)
        return p

    def wait(self, task_id, states, timeout=120, seen=None, with_pid=False):
        """Polls until the task is in one of ``states`` (and, with
        ``with_pid``, its process id is recorded: a claimed task is "starting"
        before the worker has started its process); records every state seen
        in ``seen``; fails with the task's log after ``timeout`` s."""
        states = (states,) if isinstance(states, str) else tuple(states)
        end = time.monotonic() + timeout
        while True:
            t = self.get(task_id)
            if seen is not None and (not seen or seen[-1] != t["state"]):
                seen.append(t["state"])
            if t["state"] in states and (not with_pid or t["pid"] is not None):
                return t
            if time.monotonic() > end:
                raise AssertionError(f"task {task_id} still {t['state']} after {timeout} s, waiting for {states}; "
                                     f"log:\n{t['log_tail']}")
            time.sleep(0.1)

    def close(self):
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
