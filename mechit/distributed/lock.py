"""One live runner per role on an output directory: a lock file that names its holder.

Records are atomic and the same whoever writes them, so two runners on one directory
never corrupt it; but two drivers of the same run would do every example twice. So a
Ray driver, or the runner of one shard, holds ``DIR/.mechit-<role>.lock`` while it runs:
a second one is refused with a one-line error naming the holder's PID and host. The lock
is an ``flock`` on that file, so the kernel drops it when its holder dies, even by
SIGKILL: the next runner takes a stale lock over without asking. The file is removed
when its holder finishes.

>>> with run_lock(".", "ray driver"):
...     run_lock(".", "ray driver").__enter__()
Traceback (most recent call last):
...
mechit.errors.InputError: .: another mechit ray driver is running on this directory (pid ... on ...); wait for it to finish or stop it
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path

from mechit.errors import InputError


def lock_path(directory: str | Path, role: str) -> Path:
    """The lock file of ``role`` under ``directory``.

    >>> lock_path("runs/attr", "shard 0/3").name
    '.mechit-shard-0-of-3.lock'
    """
    name = re.sub(r"[^A-Za-z0-9]+", "-", role.replace("/", " of ")).strip("-")
    return Path(directory) / f".mechit-{name}.lock"


@contextmanager
def run_lock(directory: str | Path, role: str):
    """Hold the lock of ``role`` on ``directory`` for the ``with`` block; refuse if a live process holds it.

    >>> with run_lock(".", "shard 0/2"):
    ...     print(lock_path(".", "shard 0/2").read_text().split()[0])
    pid
    """
    path = lock_path(directory, role)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "pid unknown"
            os.close(fd)
            raise InputError(f"{directory}: another mechit {role} is running on this directory ({holder}); "
                             "wait for it to finish or stop it") from None
        try:
            same_file = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            break
        os.close(fd)  # its previous holder removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        yield path
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)
