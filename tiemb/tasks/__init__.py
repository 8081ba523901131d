"""Optimization tasks (seed 001): a queue of optimize() jobs in one SQLite
file, a worker that runs each in its own process, and the actions a person
takes on them (stop, retry, delete, tag, save), shared by ``tiemb tasks`` and
the web page of ``tiemb ui``.

    store.py    the database (WAL, one transaction per change)
    submit.py   model versions, naming, input checks
    actions.py  stop / retry / delete / tag / save
    worker.py   the worker loop and the dead-worker rule
    runner.py   one task in its own process
    cli.py      the command line
    web.py      the Flask page and JSON API
"""

from .actions import delete, retry, save, stop, tag
from .store import STATES, Store, TaskError, default_db
from .submit import submit

__all__ = ["Store", "TaskError", "STATES", "default_db", "submit", "stop", "retry", "delete", "tag", "save"]
