"""A full disk under the outbox: when telemetry is shed, and what is reported about it.

The outbox sheds telemetry once the free space outside its reserve (see
`gateway.storage.diskspace`) falls below half a reserve, or a commit fails for lack of
room; it stays in that state at least `FULL_HOLD_S`, so a nearly full disk does not
flap, and until the reserve could be made again.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gateway.storage.diskspace import Room
from gateway.storage.outbox_memory import Unstored

__all__ = ["FULL_HOLD_S", "BoundWarnings", "FullDisk", "checkpoint"]

log = logging.getLogger("gateway.storage.outbox")

FULL_HOLD_S = 10.0  # shortest time telemetry is shed once the disk was found full


class FullDisk:
    """The full-disk state of one outbox; used by its writer thread only."""

    def __init__(
        self,
        path: Path,
        room: Room,
        memory: Unstored,
        report: Callable[[Mapping[str, Any]], None],
    ) -> None:
        self.path = path
        self.room = room
        self.memory = memory
        self.report = report  # queues a `gateway.storage` event
        self.full = False  # shedding telemetry for lack of room
        self._since = 0.0

    def short_of_room(self) -> bool:
        """True while telemetry must be shed; leaves that state once the reserve is back."""
        tight = self.room.tight()
        if not self.full:
            if tight:
                self.enter("free space below half the reserve")
            return tight
        # Held for a while: checkpoints give back room that the next commits take again,
        # and a disk that is nearly full must not flap between full and recovered.
        if tight or time.monotonic() - self._since < FULL_HOLD_S:
            return True
        if not self.room.make_reserve():
            return True
        self.full = False
        log.warning("outbox: room again, reserve restored; telemetry is stored again")
        self.report(self.report_data("recovered"))
        return False

    def enter(self, reason: str) -> None:
        """Start shedding telemetry (once) and report the full disk."""
        if self.full:
            return
        self.full = True
        self._since = time.monotonic()
        log.error("outbox: disk full (%s): telemetry is shed, events keep being stored", reason)
        self.report(self.report_data("full"))

    def report_data(self, problem: str) -> dict[str, Any]:
        """The `gateway.storage` data about the room left: `full` or `recovered`."""
        free = self.room.free_bytes()
        return {
            "store": "outbox",
            "problem": problem,
            "file": self.path.name,
            "free_bytes": max(free or 0, 0),
            "reserve_bytes": self.room.reserve_bytes if self.room.reserved else 0,
            "events_unstored": self.memory.count(),
        }


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL back and truncate it, to give its space back on a full disk."""
    # The WAL grows by a few pages a commit until the next automatic checkpoint
    # (4 MB): on a full disk, copy it back after every commit and give its space
    # back, so the writer needs little and the reserve can be made again.
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        log.debug("outbox checkpoint on a full disk failed: %s", exc)


class BoundWarnings:
    """Says, at most once a minute each, that the outbox bound dropped telemetry or holds
    more events than it (events are kept)."""

    def __init__(self, max_messages: int) -> None:
        self.max_messages = max_messages
        self._drop = self._events = -float("inf")

    def check(self, dropped: int, events: int, dropped_so_far: int) -> None:
        now = time.monotonic()
        if dropped and now - self._drop >= 60:
            self._drop = now
            log.warning(
                "outbox full (%d messages): oldest telemetry dropped, %d dropped so far",
                self.max_messages,
                dropped_so_far,
            )
        if events > self.max_messages and now - self._events >= 60:
            self._events = now
            log.warning(
                "outbox holds %d undelivered events, over its bound of %d: events are kept",
                events,
                self.max_messages,
            )
