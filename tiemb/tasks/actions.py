"""What a person does to an existing task: stop, retry, delete, tag, save.
The command line and the web page both call these, over the same database."""

from __future__ import annotations

import os
import shutil
import time
from typing import Dict, Optional

from .store import DONE, FAILED, FINISHED, QUEUED, RUNNING, STOPPED, Store, TaskError
from .submit import check_settings, read_tensor_info


def stop(store: Store, task_id: int) -> str:
    """Stops a queued or running task; returns its new state ("stopped").

    A queued task is stopped at once. A running one is marked stopped here; the
    worker that runs it sees the mark within a fraction of a second and kills
    that task's process (only that one)."""
    t = store.get(task_id)
    if t["state"] in FINISHED:
        raise TaskError(f"task {task_id} ({t['name']}) is {t['state']} already; only queued or running tasks stop")
    reason = "stopped before it started" if t["state"] == QUEUED else f"stopped while {t['state']}"
    if not store.update(task_id, when=(QUEUED,) + RUNNING, state=STOPPED, reason=reason, ended=time.time()):
        t = store.get(task_id)
        raise TaskError(f"task {task_id} ({t['name']}) became {t['state']} meanwhile; nothing to stop")
    return STOPPED


def retry(store: Store, task_id: int, *, level: Optional[int] = None, tensor_info=None, device: Optional[str] = None,
          runs: Optional[int] = None, config: Optional[dict] = None, tensor_info_files: bool = False) -> dict:
    """Queues a failed or stopped task again, with any settings given here
    replacing its old ones (the same checks as at submit); returns the task.

    Args:
        level, tensor_info, device, runs, config: new settings; None keeps the old.
        tensor_info_files: a tensor_info string may name a file of lines
            (the command line; never the web page).
    """
    t = store.get(task_id)
    if t["state"] not in (FAILED, STOPPED):
        raise TaskError(f"task {task_id} ({t['name']}) is {t['state']}; only failed or stopped tasks are retried")
    settings = check_settings(t["level"] if level is None else level, device or t["device"],
                              t["runs"] if runs is None else runs, t["config"] if config is None else config)
    info = t["tensor_info"] if tensor_info is None else read_tensor_info(tensor_info, files=tensor_info_files)
    if not store.update(task_id, when=(FAILED, STOPPED), state=QUEUED, reason=None, stage=None, progress=0,
                        speedup=None, report=None, pid=None, worker=None, started=None, ended=None,
                        tensor_info=info, **settings):
        raise TaskError(f"task {task_id} ({t['name']}) changed state meanwhile; look again")
    return store.get(task_id)


def delete(store: Store, task_id: int) -> dict:
    """Deletes a task that is not running, with its optimized model and log."""
    t = store.delete(task_id)
    # Both paths were made by this package and carry the task id (store.insert_many).
    if t["output_path"] and os.path.isdir(t["output_path"]):
        shutil.rmtree(t["output_path"], ignore_errors=True)
    shutil.rmtree(os.path.dirname(t["log_path"]), ignore_errors=True)
    return t


def tag(store: Store, task_id: int, tags: Dict[str, str], remove=()) -> dict:
    """Sets ``tags`` (key -> value) and drops the keys in ``remove``; returns
    the task's tags."""
    t = store.get(task_id)
    new = dict(t["tags"])
    new.update(tags)
    for k in remove:
        new.pop(k, None)
    store.update(task_id, tags=new)
    return new


def save(store: Store, task_id: int, repository: str) -> str:
    """Copies a done task's optimized model to ``<repository>/<model>/<version>/``
    (a TF Serving layout), refusing to overwrite; returns that path."""
    t = store.get(task_id)
    if t["state"] != DONE:
        raise TaskError(f"task {task_id} ({t['name']}) is {t['state']}; only done tasks are saved")
    if not os.path.exists(t["output_path"]):
        raise TaskError(f"task {task_id}: its optimized model {t['output_path']} is gone")
    dest = os.path.join(os.path.abspath(os.path.expanduser(repository)), t["model"], t["version"])
    if os.path.exists(dest):
        raise TaskError(f"{dest} exists already; it is not overwritten (remove it or choose another --repository)")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copytree(t["output_path"], dest)
    return dest


def log_tail(path: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a task's log file ("" when it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""
