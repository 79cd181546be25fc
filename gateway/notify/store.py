"""The notifier's record: every SMS it was asked to send, and what became of it.

SQLite in WAL mode (a `gateway.storage.sqlitestore` store), so an SMS queued before a
crash or a restart is still sent after it, and a person can see what was sent (`gateway notify
log`).  Recipients are recorded by name only: phone numbers stay in the config.  One row
per alarm, escalation level and recipient: the alarm engine publishes an alarm again
after a restart, and that must not text anyone twice.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gateway.storage.sqlitestore import Schema, SqliteStore

__all__ = ["SmsRecord", "SmsState", "SmsStore"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sms (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id TEXT NOT NULL,
    level INTEGER NOT NULL,
    recipient TEXT NOT NULL,
    text TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    done_at TEXT,
    refs TEXT NOT NULL DEFAULT '',
    UNIQUE (alarm_id, level, recipient)
);
CREATE INDEX IF NOT EXISTS sms_pending ON sms (id) WHERE state = 'pending';
"""


# Bounded on disk: done rows older than this go, and never more rows than _MAX_ROWS.
_KEEP_DAYS = 90
_MAX_ROWS = 20_000


class SmsState:
    """What became of one SMS."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # given up after the retry window, or refused for good
    CANCELLED = "cancelled"  # the alarm was acknowledged before it went out


@dataclass(frozen=True, slots=True)
class SmsRecord:
    """One row of the record."""

    id: int
    alarm_id: str
    level: int
    recipient: str
    text: str
    state: str
    attempts: int
    last_error: str
    created_at: str
    done_at: str | None
    refs: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SmsStore(SqliteStore):
    """The record at `path`; every method is blocking (call it from a worker thread)."""

    schema = Schema("SMS record", 1, _SCHEMA)

    def opened(self, conn: sqlite3.Connection) -> None:
        # A record damaged by a power cut is moved aside and rebuilt from what can be
        # read, like every store of the gateway: never a notifier that dies at each start.
        if self.salvage is not None:
            log.warning(
                "SMS record %s was damaged (%s): moved to %s, %d rows salvaged",
                self.path,
                self.salvage.reason,
                self.salvage.moved_to.name,
                self.salvage.rows_copied,
            )

    def add(self, alarm_id: str, level: int, recipient: str, text: str) -> bool:
        """Queue one SMS; False when this alarm, level and recipient were queued before."""
        cur = self.conn.execute(
            "INSERT OR IGNORE INTO sms (alarm_id, level, recipient, text, state, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (alarm_id, level, recipient, text, SmsState.PENDING, _now()),
        )
        return cur.rowcount == 1

    def pending(self) -> list[SmsRecord]:
        return self._select("WHERE state = ? ORDER BY id", (SmsState.PENDING,))

    def recent(self, limit: int = 50) -> list[SmsRecord]:
        return self._select("ORDER BY id DESC LIMIT ?", (limit,))

    def _select(self, tail: str, args: tuple[object, ...]) -> list[SmsRecord]:
        rows = self.conn.execute(
            "SELECT id, alarm_id, level, recipient, text, state, attempts, last_error,"
            f" created_at, done_at, refs FROM sms {tail}",
            args,
        )
        return [SmsRecord(*row) for row in rows]

    def attempt_failed(self, sms_id: int, error: str) -> None:
        self.conn.execute(
            "UPDATE sms SET attempts = attempts + 1, last_error = ? WHERE id = ?", (error, sms_id)
        )

    def finish(self, sms_id: int, state: str, *, refs: str = "", error: str = "") -> None:
        """Record the end of one SMS: sent (with the network's references) or failed."""
        tried = 1 if state == SmsState.SENT else 0
        self.conn.execute(
            "UPDATE sms SET state = ?, done_at = ?, refs = ?, attempts = attempts + ?,"
            " last_error = ? WHERE id = ?",
            (state, _now(), refs, tried, error, sms_id),
        )

    def cancel(self, alarm_id: str) -> int:
        """Cancel what is still pending for an alarm; returns how many."""
        cur = self.conn.execute(
            "UPDATE sms SET state = ?, done_at = ? WHERE alarm_id = ? AND state = ?",
            (SmsState.CANCELLED, _now(), alarm_id, SmsState.PENDING),
        )
        return cur.rowcount

    def purge(self) -> int:
        """Forget old finished rows; the record stays bounded on an SD card."""
        cutoff = (datetime.now(UTC) - timedelta(days=_KEEP_DAYS)).isoformat(timespec="seconds")
        db = self.conn
        gone = db.execute(
            "DELETE FROM sms WHERE state != ? AND done_at < ?", (SmsState.PENDING, cutoff)
        ).rowcount
        gone += db.execute(
            "DELETE FROM sms WHERE id <= (SELECT MAX(id) FROM sms) - ? AND state != ?",
            (_MAX_ROWS, SmsState.PENDING),
        ).rowcount
        return gone
