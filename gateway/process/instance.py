"""One gateway process per outbox: a second `gateway run` on the same state stops at once.

Two processes on one outbox publish it under one MQTT client id, so the broker drops
each of them whenever the other connects (about once a second), and both number their
messages from the same counter: seq numbers repeat (32 duplicates in 8 s, measured),
which breaks the MQTT contract (docs/mqtt-api.md).  An installer who starts
`gateway run` by hand while the service runs is the usual way there.

The lock is `flock()` on `<outbox>.lock` beside the outbox.  The kernel drops it when the
process ends, however it ends (kill -9, a power cut), so nothing stale is left to clean
up; a restart that re-executes the process closes the descriptor (close-on-exec) and the
new program takes the lock again.  A file of its own, not the database: SQLite holds
POSIX locks on the database, which a process loses when it closes any descriptor of that
file, and a damaged outbox is moved aside and replaced, which a lock on the old file
would not follow.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path

__all__ = ["InstanceHeld", "hold", "lock_path"]

log = logging.getLogger(__name__)


class InstanceHeld(Exception):
    """Another process runs a gateway on this outbox."""


def lock_path(outbox: Path) -> Path:
    return outbox.with_name(outbox.name + ".lock")


def hold(outbox: Path) -> int | None:
    """Take the outbox's lock for this process; the descriptor to keep open, or None.

    Raises InstanceHeld, naming the holder's pid, when another process has it.  A lock
    file that cannot be made (a read-only folder) is logged and not required: the
    outbox then reports its own error, and the guard must not stop a gateway that
    could otherwise run.
    """
    path = lock_path(outbox)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        log.warning(
            "cannot make %s (%s): a second gateway on this outbox is not refused", path, exc
        )
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise InstanceHeld(
            f"another gateway process{holder} is running with the outbox {outbox}; stop it"
            " first (the service: systemctl stop community-gateway). Two gateways on one"
            " outbox take turns on the broker and send messages under the same seq numbers."
        ) from None
    except OSError:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):  # the pid is for the message above, nothing more
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _holder(fd: int) -> str:
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return ""
    return f" (pid {pid})"
