"""The task database: one SQLite file shared by every command-line process,
the worker and the web page.

WAL mode lets readers (``tasks list``, the page) run while a task writes its
progress; every change is one ``BEGIN IMMEDIATE`` transaction, so two
processes never both claim a task or both take a name. State changes are
conditional updates (``... WHERE state IN (...)``): whoever loses a race (a
task finishing just as it is stopped) changes nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from typing import Dict, Iterable, List, Optional

QUEUED, STARTING, ACCELERATING, DONE, FAILED, STOPPED = "queued", "starting", "accelerating", "done", "failed", \
    "stopped"
STATES = (QUEUED, STARTING, ACCELERATING, DONE, FAILED, STOPPED)
RUNNING = (STARTING, ACCELERATING)
FINISHED = (DONE, FAILED, STOPPED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    model TEXT NOT NULL,
    version TEXT NOT NULL,
    model_path TEXT NOT NULL,
    save_root TEXT NOT NULL,
    output_path TEXT NOT NULL,
    level INTEGER NOT NULL,
    device TEXT NOT NULL,
    tensor_info TEXT NOT NULL,
    config TEXT NOT NULL,
    runs INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    state TEXT NOT NULL,
    reason TEXT,
    stage TEXT,
    progress REAL NOT NULL DEFAULT 0,
    speedup REAL,
    report TEXT,
    log_path TEXT NOT NULL,
    worker TEXT,
    pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    ended REAL
);
CREATE INDEX IF NOT EXISTS tasks_state ON tasks(state);
CREATE TABLE IF NOT EXISTS workers (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    jobs INTEGER NOT NULL,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL
);
"""

# Columns a caller may set at submit time or on retry.
SETTINGS = ("level", "device", "tensor_info", "config", "runs")


class TaskError(ValueError):
    """A task operation that cannot be done (unknown id, wrong state, a
    duplicate name); the message says which task and why."""


def default_db() -> str:
    """``$XDG_DATA_HOME/tiemb/tasks.db``, else ``~/.local/share/tiemb/tasks.db``."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "tiemb", "tasks.db")


class Store:
    """The task table over one SQLite file.

    Args:
        path: the database file (created with its folder if missing); None:
            :func:`default_db`.
    """

    def __init__(self, path: Optional[str] = None):
        self.path = os.path.abspath(path or default_db())
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # autocommit mode: transactions are the explicit BEGIN IMMEDIATE below.
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 30000")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        have = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        for stmt in _SCHEMA.split(";") if not {"tasks", "workers"} <= have else ():
            if stmt.strip():
                with self.transaction():
                    self.db.execute(stmt)

    @property
    def files_dir(self) -> str:
        """Where each task's log lives: ``<db>.files/<id>/``."""
        return self.path + ".files"

    def close(self):
        self.db.close()

    @contextlib.contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------- reading

    def get(self, task_id: int) -> dict:
        row = self.db.execute("SELECT * FROM tasks WHERE id = ?", (int(task_id),)).fetchone()
        if row is None:
            raise TaskError(f"no task with id {task_id} in {self.path}")
        return _task(row)

    def list(self, state: Optional[str] = None, tags: Optional[Dict[str, str]] = None) -> List[dict]:
        """Tasks, oldest first; ``state`` and every ``tags`` pair must match."""
        if state is not None and state not in STATES:
            raise TaskError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        sql, args = "SELECT * FROM tasks", []
        if state:
            sql, args = sql + " WHERE state = ?", [state]
        out = [_task(r) for r in self.db.execute(sql + " ORDER BY id", args)]
        for k, v in (tags or {}).items():
            out = [t for t in out if t["tags"].get(k) == v]
        return out

    # ------------------------------------------------------------- writing

    def insert_many(self, tasks: Iterable[dict]) -> List[int]:
        """Inserts all tasks in one transaction, or none: a duplicate name
        (here or already stored) raises :class:`TaskError`."""
        ids = []
        now = time.time()
        with self.transaction() as db:
            for t in tasks:
                if db.execute("SELECT 1 FROM tasks WHERE name = ?", (t["name"],)).fetchone():
                    raise TaskError(f"a task named {t['name']!r} exists already; choose another --name "
                                    "(or delete the old task)")
                cur = db.execute(
                    "INSERT INTO tasks (name, model, version, model_path, save_root, output_path, level, device, "
                    "tensor_info, config, runs, tags, state, log_path, created) "
                    "VALUES (?, ?, ?, ?, ?, '', ?, ?, ?, ?, ?, ?, ?, '', ?)",
                    (t["name"], t["model"], t["version"], t["model_path"], t["save_root"], t["level"], t["device"],
                     t["tensor_info"], json.dumps(t["config"]), t["runs"], json.dumps(t.get("tags") or {}), QUEUED,
                     now))
                tid = cur.lastrowid
                # The output and log paths carry the id, so they are unique even across deletes.
                out = os.path.join(t["save_root"], f"{tid}-{_safe(t['name'])}")
                log = os.path.join(self.files_dir, str(tid), "log.txt")
                db.execute("UPDATE tasks SET output_path = ?, log_path = ? WHERE id = ?", (out, log, tid))
                ids.append(tid)
        return ids

    def update(self, task_id: int, when: Iterable[str] = (), match: Optional[dict] = None, **fields) -> bool:
        """Sets ``fields`` if the task's state is one of ``when`` (any state
        when empty) and its columns equal ``match`` (e.g. the worker and the
        attempt a task process belongs to); returns whether the row changed."""
        if "tags" in fields or "config" in fields:
            fields = {k: (json.dumps(v) if k in ("tags", "config") else v) for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in fields)
        sql, args = f"UPDATE tasks SET {sets} WHERE id = ?", list(fields.values()) + [int(task_id)]
        when = tuple(when)
        if when:
            sql += f" AND state IN ({', '.join('?' * len(when))})"
            args += list(when)
        for k, v in (match or {}).items():
            sql, args = sql + f" AND {k} = ?", args + [v]
        with self.transaction() as db:
            return db.execute(sql, args).rowcount == 1

    def delete(self, task_id: int) -> dict:
        """Removes a task that is not running; returns its row."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM tasks WHERE id = ?", (int(task_id),)).fetchone()
            if row is None:
                raise TaskError(f"no task with id {task_id} in {self.path}")
            if row["state"] in RUNNING:
                raise TaskError(f"task {task_id} ({row['name']}) is {row['state']}; stop it before deleting it")
            db.execute("DELETE FROM tasks WHERE id = ?", (int(task_id),))
        return _task(row)

    def claim(self, worker: str) -> Optional[dict]:
        """The oldest queued task, moved to "starting" for ``worker``; None when
        the queue is empty. One transaction, so two workers never share a task."""
        # A read first: an idle worker polling must not take the write lock each time.
        if self.db.execute("SELECT 1 FROM tasks WHERE state = ? LIMIT 1", (QUEUED,)).fetchone() is None:
            return None
        with self.transaction() as db:
            row = db.execute("SELECT id FROM tasks WHERE state = ? ORDER BY id LIMIT 1", (QUEUED,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE tasks SET state = ?, stage = 'starting', progress = 0, pid = NULL, worker = ?, started = ?, "
                       "ended = NULL, reason = NULL, attempts = attempts + 1 WHERE id = ?",
                       (STARTING, worker, time.time(), row["id"]))
        return self.get(row["id"])

    # ------------------------------------------------------------- workers

    def register_worker(self, worker: str, host: str, pid: int, jobs: int):
        now = time.time()
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?, ?, ?, ?)", (worker, host, pid, jobs, now, now))

    def heartbeat(self, worker: str):
        with self.transaction() as db:
            db.execute("UPDATE workers SET heartbeat = ? WHERE id = ?", (time.time(), worker))

    def remove_worker(self, worker: str):
        with self.transaction() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker,))

    def workers(self) -> List[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM workers ORDER BY started")]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


def _task(row: sqlite3.Row) -> dict:
    t = dict(row)
    t["tags"] = json.loads(t["tags"] or "{}")
    t["config"] = json.loads(t["config"] or "{}")
    t["report"] = json.loads(t["report"]) if t["report"] else None
    return t
