"""Putting optimize()'s output in place safely: work directories that a
killed run leaves are removed by the next run, SIGTERM cleans up like Ctrl-C,
and an existing model is replaced atomically (a reader sees the old model or
the new one, never none and never a mix of the two)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import shutil
import signal
import socket
import tempfile
import threading
import time

WORK_PREFIX = ".tiemb-"
_OWNER = "tiemb-owner"
# A work directory without an owner file (a run killed before it wrote one)
# is stale after this long.
_ORPHAN_SECONDS = 3600


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_work_dirs(parent: str) -> list:
    """Removes the ``.tiemb-*`` work directories in ``parent`` whose optimize()
    run is gone (its process no longer exists on this host; or no owner file
    and older than an hour). Returns the paths removed."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    host = socket.gethostname()
    for name in names:
        path = os.path.join(parent, name)
        if not name.startswith(WORK_PREFIX) or not os.path.isdir(path) or os.path.islink(path):
            continue
        try:
            with open(os.path.join(path, _OWNER)) as f:
                owner_host, pid = f.read().split()
            stale = owner_host == host and not process_alive(int(pid))
        except (OSError, ValueError):
            try:
                stale = time.time() - os.stat(path).st_mtime > _ORPHAN_SECONDS
            except OSError:
                stale = False
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def new_work_dir(parent: str) -> str:
    """A fresh ``.tiemb-XXXX`` work directory in ``parent`` (the same file
    system as the result, so that moving it into place is a rename), owned by
    this process; stale ones of killed runs are removed first."""
    remove_stale_work_dirs(parent)
    work = tempfile.mkdtemp(prefix=WORK_PREFIX, dir=parent)
    with open(os.path.join(work, _OWNER), "w") as f:
        f.write(f"{socket.gethostname()} {os.getpid()}\n")
    return work


class Terminated(KeyboardInterrupt):
    """SIGTERM during optimize(): unwinds like Ctrl-C, so work directories are removed."""


@contextlib.contextmanager
def terminate_as_interrupt():
    """While active (main thread only), SIGTERM raises :class:`Terminated`
    instead of killing the process, so ``finally`` blocks clean up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a: str, b: str) -> bool:
    """Atomically swaps paths a and b (Linux renameat2 RENAME_EXCHANGE); False
    where the system or file system cannot."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = getattr(_libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), b)


def replace(new: str, dst: str) -> bool:
    """Moves ``new`` (a file or directory on dst's file system) to ``dst``.
    An existing ``dst`` is swapped atomically with ``new`` (so ``new`` then
    holds the old one, for the caller to delete or to put back with
    :func:`replace` again). Returns True when there was an old one."""
    if not os.path.lexists(dst):
        os.rename(new, dst)
        return False
    if os.path.isdir(dst) and not os.path.islink(dst):
        if _exchange(new, dst):
            return True
        # No atomic exchange here: rename the old aside, then the new in.
        aside = new + ".old"
        os.rename(dst, aside)
        try:
            os.rename(new, dst)
        except BaseException:
            os.rename(aside, dst)
            raise
        os.rename(aside, new)
        return True
    if _exchange(new, dst):
        return True
    # A file: keep the old one at `new`, then rename over (atomic for files).
    aside = new + ".old"
    shutil.copy2(dst, aside)
    os.replace(new, dst)
    os.rename(aside, new)
    return True
