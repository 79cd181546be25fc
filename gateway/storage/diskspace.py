"""Room on the outbox's file system: a reserve file kept for events, and the free-space watch.

An SD card shared with logs, or an outbox that grew through a long outage, fills up.
SQLite then refuses every commit, alarms included.  The outbox keeps `reserve_bytes`
allocated in a file of its own next to the database (`NAME.reserve`, made with
fallocate so the blocks really are taken): while it exists, the space it holds cannot
be taken by anything else.  The outbox sheds telemetry as soon as the free space
outside the reserve falls below half a reserve, and deletes the reserve when a commit
with events fails for lack of space, so the events fit; it makes the reserve again
once there is room for it and as much again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from pathlib import Path

__all__ = ["Room", "no_room", "release_reserves"]

log = logging.getLogger("gateway.storage.outbox")


def no_room(exc: BaseException) -> bool:
    """True for a full disk, a file over its size limit, or a write the card refused."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return "full" in str(exc) or "I/O error" in str(exc)
    return bool(code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR))


def release_reserves(folder: Path) -> bool:
    """Free the outbox reserves in `folder` for another store on the same full disk.

    The alarm store lives next to the outbox: an alarm that cannot be saved matters as
    much as its event.  The outbox notices the missing reserve, sheds telemetry, and
    makes the reserve again once there is room.
    """
    released = False
    for reserve in folder.glob("*.reserve"):
        with contextlib.suppress(OSError):
            reserve.unlink()
            released = True
            log.error("disk full: reserve %s released for %s", reserve.name, folder)
    return released


class Room:
    """The space watch of one outbox file; used by the outbox's writer thread only."""

    def __init__(self, db: Path, reserve_bytes: int) -> None:
        self.reserve_bytes = reserve_bytes
        self.reserve = db.with_name(f"{db.stem}.reserve")
        self._dir = db.parent

    def free_bytes(self) -> int | None:
        """Bytes an unprivileged process may still write there; None if unknown."""
        try:
            st = os.statvfs(self._dir)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    @property
    def reserved(self) -> bool:
        return self.reserve_bytes > 0 and self.reserve.exists()

    def tight(self) -> bool:
        """True when telemetry should be shed: little room left outside the reserve."""
        free = self.free_bytes()
        return self.reserve_bytes > 0 and free is not None and free < self.reserve_bytes // 2

    def make_reserve(self) -> bool:
        """Allocate the reserve if missing and there is room for it and as much again."""
        if self.reserve_bytes <= 0 or self.reserved:
            return True
        free = self.free_bytes()
        if free is None or free < 2 * self.reserve_bytes:
            return False
        try:
            fd = os.open(self.reserve, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve_bytes)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("outbox: cannot allocate the reserve %s: %s", self.reserve, exc)
            with contextlib.suppress(OSError):
                self.reserve.unlink()
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve so that events fit; False if there was none."""
        try:
            self.reserve.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            log.error("outbox: cannot release the reserve %s: %s", self.reserve, exc)
            return False
        log.error(
            "outbox: disk full, %d reserved bytes released for events; telemetry is shed",
            self.reserve_bytes,
        )
        return True
