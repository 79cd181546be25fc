"""The alarm database: SQLite in WAL mode, synchronous FULL, like the outbox.

One row per alarm (its whole record as JSON, plus the columns queries need), every
change in `transitions`, and `published_rev` per alarm: a crash between storing a
change and the outbox taking its document is repaired at start by publishing again.
`pending_acks` holds acknowledgements typed with `gateway ack` in another process; only
the running engine applies them, so transitions are written by one process alone.
The meta row `run_mark` is where the engine's run clock stood (gateway.sdk.clock.RunMark):
the alarms' timers are deadlines on that clock, so the next process carries on from it.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.sdk.clock import RunMark
from gateway.storage.diskspace import no_room, release_reserves
from gateway.storage.sqlitestore import Schema, SqliteStore, SyncMode, transaction

from .model import Alarm, AlarmState, Change, Instant

__all__ = ["MAX_UNSAVED", "AlarmStore", "PendingAck"]

# Changes kept in memory while the alarm database refuses them (a full card).
MAX_UNSAVED = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alarms (
    id TEXT PRIMARY KEY,
    num INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    rev INTEGER NOT NULL,
    published_rev INTEGER NOT NULL DEFAULT 0,
    closed_order INTEGER,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alarms_open ON alarms (state) WHERE state != 'closed';
CREATE INDEX IF NOT EXISTS alarms_closed ON alarms (closed_order) WHERE closed_order IS NOT NULL;
CREATE INDEX IF NOT EXISTS alarms_unpublished ON alarms (num) WHERE published_rev < rev;
CREATE TABLE IF NOT EXISTS transitions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id TEXT NOT NULL,
    rev INTEGER NOT NULL,
    what TEXT NOT NULL,
    before TEXT,
    after TEXT NOT NULL,
    at TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_acks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alarm_id TEXT NOT NULL,
    by TEXT NOT NULL,
    note TEXT NOT NULL,
    via TEXT NOT NULL,
    queued_at REAL NOT NULL,
    status TEXT,
    detail TEXT,
    done_at REAL
);
"""


_TOKEN_CHARS = string.ascii_lowercase + string.digits


@dataclass(frozen=True, slots=True)
class PendingAck:
    """An acknowledgement queued by `gateway ack`, and its result once applied."""

    id: int
    alarm_id: str
    by: str
    note: str
    via: str
    status: str | None = None  # accepted, already_acknowledged, unknown, error
    detail: str | None = None


class AlarmStore(SqliteStore):
    """The alarm database of one gateway; use from one thread (the event loop).

    The engine writes with the `*_later` methods (after `start_writer()`): in order, in
    the store's writer thread; reads and the blocking writes (tools, tests) run here.
    """

    schema = Schema("alarm database", 1, _SCHEMA)

    def __init__(self, path: Path) -> None:
        super().__init__(path, sync=SyncMode.FULL)
        self.token = ""
        self._next = 1
        self._backlog: list[Change] = []  # refused by the database; writer thread only
        # Handed to `save_later`, not yet taken by the writer (under the lock).
        self._queue_lock = threading.Lock()
        self._queued: list[Change] = []
        self._queued_mark: RunMark | None = None
        self._queued_save: Future[int] | None = None
        # Published revs waiting to ride along with the next write (a save, a run mark,
        # close): each stored alone was a synced commit on the SD card, and one lost in
        # a crash only makes the start publish that retained state again (issue 16).
        self._published: dict[str, int] = {}
        self._published_done: Future[None] | None = None

    def opened(self, conn: sqlite3.Connection) -> None:
        """Read the id token and counter; a new database gets a fresh token."""
        with self.transaction():
            row = conn.execute("SELECT value FROM meta WHERE key='token'").fetchone()
            if row is None:
                # Ids must be unique per gateway forever, also after the database is
                # lost and made again: a fresh random token, then a counter.
                token = "".join(secrets.choice(_TOKEN_CHARS) for _ in range(6))
                conn.execute("INSERT INTO meta VALUES ('token', ?)", (token,))
                conn.execute("INSERT INTO meta VALUES ('next', '1')")
        self.token = conn.execute("SELECT value FROM meta WHERE key='token'").fetchone()[0]
        self._next = int(conn.execute("SELECT value FROM meta WHERE key='next'").fetchone()[0])

    # ---- alarms -------------------------------------------------------------------

    def new_id(self) -> str:
        """The next alarm id; the counter is stored with the alarm that uses it."""
        n = self._next
        self._next += 1
        return f"{self.token}-{n}"

    def run_mark(self) -> RunMark | None:
        """Where the run clock stood when last stored; None for a new database."""
        row = self.conn.execute("SELECT value FROM meta WHERE key='run_mark'").fetchone()
        return None if row is None else RunMark.from_json(str(row[0]))

    # ---- writes: blocking (tools, tests), or `*_later` in the writer thread -------

    def save_mark(self, mark: RunMark) -> None:
        _put_mark(self.conn, mark)

    def save_mark_later(self, mark: RunMark) -> Future[None]:
        def put(c: sqlite3.Connection) -> None:
            published, done = self._take_published()
            try:
                with transaction(c):
                    _put_mark(c, mark)
                    _put_published_all(c, published)
            except BaseException as exc:
                _settle(done, exc)
                raise
            _settle(done, None)

        return self.write(put)

    def _take_published(self) -> tuple[dict[str, int], Future[None] | None]:
        with self._queue_lock:
            published, done = self._published, self._published_done
            self._published, self._published_done = {}, None
        return published, done

    def save(self, changes: Sequence[Change], mark: RunMark | None = None) -> None:
        """Store the changes (rows, transitions) and the run clock's `mark` in one transaction.

        Together, so that the timers stored are always read with the clock they count on.
        """
        if changes:
            self._save(self.conn, changes, mark, self._next)

    def save_later(self, changes: Sequence[Change], mark: RunMark) -> Future[int]:
        """`save` in the writer thread, after the changes it refused before (a full card).

        The future gives how many changes were stored, or the error; the refused ones
        are kept (bounded, see `backlog`) and stored first by the next call.  Changes
        handed over while a save still waits for the writer join it (one transaction,
        one future): a stalled disk costs one queued write, not one per signal.
        """
        with self._queue_lock:
            self._queued = _bounded([*self._queued, *changes])
            self._queued_mark = mark
            if self._queued_save is None:
                self._queued_save = self.write(self._save_queued)
            return self._queued_save

    def _save_queued(self, c: sqlite3.Connection) -> int:
        with self._queue_lock:
            changes, mark = self._queued, self._queued_mark
            self._queued, self._queued_save = [], None
        published, done = self._take_published()
        try:
            # The counter as it is now: at least every id of these changes.
            stored = self._save_backlog(c, changes, mark, self._next, published)
        except BaseException as exc:
            _settle(done, exc)
            raise
        _settle(done, None)
        return stored

    @property
    def backlog(self) -> int:
        """Changes the database refused, waiting for the next `save_later`."""
        return len(self._backlog)

    def _save_backlog(
        self,
        c: sqlite3.Connection,
        changes: list[Change],
        mark: RunMark | None,
        next_n: int,
        published: Mapping[str, int] | None = None,
    ) -> int:
        pending = [*self._backlog, *changes]
        if not pending:
            if published:
                with transaction(c):
                    _put_published_all(c, published)
            return 0
        try:
            self._save(c, pending, mark, next_n, published)
        except sqlite3.Error:
            self._backlog = _bounded(pending)
            raise
        self._backlog = []
        return len(pending)

    def _save(
        self,
        c: sqlite3.Connection,
        changes: Sequence[Change],
        mark: RunMark | None,
        next_n: int,
        published: Mapping[str, int] | None = None,
    ) -> None:
        try:
            _put_changes(c, changes, mark, next_n, published)
        except sqlite3.OperationalError as exc:
            # A full card: the outbox's reserve next to us is there for alarms too.
            if not (no_room(exc) and release_reserves(self.path.parent)):
                raise
            _put_changes(c, changes, mark, next_n, published)

    def mark_published(self, alarm_id: str, rev: int) -> None:
        _put_published(self.conn, alarm_id, rev)

    def mark_published_later(self, alarm_id: str, rev: int) -> Future[None]:
        """Remember `rev` as published; stored with the next write (see `_published`)."""
        with self._queue_lock:
            self._published[alarm_id] = max(rev, self._published.get(alarm_id, 0))
            if self._published_done is None:
                self._published_done = Future()
            return self._published_done

    def close(self) -> None:
        """Store the published revs still waiting, then close (see `SqliteStore.close`)."""
        if self._published and self._writer is not None:
            published, done = self._take_published()

            def put(c: sqlite3.Connection) -> None:
                with transaction(c):
                    _put_published_all(c, published)

            fut = self.write(put)
            fut.add_done_callback(lambda f: _settle(done, f.exception()))
        super().close()

    def _alarms(
        self, where: str, args: Sequence[Any] = (), now: Instant | None = None
    ) -> list[Alarm]:
        rows = self.conn.execute(f"SELECT record FROM alarms {where}", args).fetchall()
        return [Alarm.from_record(json.loads(r[0]), now) for r in rows]

    def open_alarms(self, now: Instant | None = None) -> list[Alarm]:
        """The alarms not closed, with their timers (`now` converts those of old records)."""
        return self._alarms("WHERE state != 'closed' ORDER BY num", now=now)

    def recent_closed(self, n: int) -> list[Alarm]:
        """The `n` most recently closed alarms, newest first."""
        return self._alarms(
            "WHERE closed_order IS NOT NULL ORDER BY closed_order DESC LIMIT ?", (n,)
        )

    def get(self, alarm_id: str) -> Alarm | None:
        found = self._alarms("WHERE id = ?", (alarm_id,))
        return found[0] if found else None

    def unpublished(self) -> list[Alarm]:
        """Alarms whose latest rev never reached the outbox, oldest first."""
        return self._alarms("WHERE published_rev < rev ORDER BY num")

    def transitions(self, alarm_id: str) -> list[tuple[int, str, str]]:
        """(rev, what, state after) of every stored change of one alarm, in order."""
        rows = self.conn.execute(
            "SELECT rev, what, after FROM transitions WHERE alarm_id = ? ORDER BY id", (alarm_id,)
        ).fetchall()
        return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

    # ---- acknowledgements queued by another process ------------------------------

    def queue_ack(self, alarm_id: str, by: str, note: str, via: str) -> int:
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO pending_acks (alarm_id, by, note, via, queued_at) VALUES (?,?,?,?,?)",
                (alarm_id, by, note, via, time.time()),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid

    def pending_acks(self) -> list[PendingAck]:
        rows = self.conn.execute(
            "SELECT id, alarm_id, by, note, via FROM pending_acks WHERE status IS NULL ORDER BY id"
        ).fetchall()
        return [PendingAck(*r) for r in rows]

    def finish_ack(self, ack_id: int, status: str, detail: str = "") -> None:
        _put_ack_result(self.conn, ack_id, status, detail)

    def finish_ack_later(self, ack_id: int, status: str, detail: str = "") -> Future[None]:
        return self.write(lambda c: _put_ack_result(c, ack_id, status, detail))

    def ack_result(self, ack_id: int) -> PendingAck | None:
        row = self.conn.execute(
            "SELECT id, alarm_id, by, note, via, status, detail FROM pending_acks WHERE id = ?",
            (ack_id,),
        ).fetchone()
        return None if row is None else PendingAck(*row)


def _put_mark(c: sqlite3.Connection, mark: RunMark) -> None:
    c.execute(
        "INSERT INTO meta VALUES ('run_mark', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (mark.to_json(),),
    )


def _put_changes(
    c: sqlite3.Connection,
    changes: Sequence[Change],
    mark: RunMark | None,
    next_n: int,
    published: Mapping[str, int] | None = None,
) -> None:
    with transaction(c):
        if mark is not None:
            _put_mark(c, mark)
        _put_published_all(c, published or {})
        for ch in changes:
            a = ch.alarm
            rec = json.dumps(a.to_record(), separators=(",", ":"))
            num = int(a.id.rsplit("-", 1)[1])
            c.execute(
                "INSERT INTO alarms (id, num, device_id, type, state, rev, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET state=excluded.state, rev=excluded.rev,"
                " record=excluded.record",
                (a.id, num, a.device.id, str(a.type), str(a.state), a.rev, rec),
            )
            if a.state is AlarmState.CLOSED:
                c.execute(
                    "UPDATE alarms SET closed_order ="
                    " (SELECT coalesce(max(closed_order), 0) + 1 FROM alarms)"
                    " WHERE id = ? AND closed_order IS NULL",
                    (a.id,),
                )
            c.execute(
                "INSERT INTO transitions (alarm_id, rev, what, before, after, at, record)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    a.id,
                    a.rev,
                    ch.what,
                    None if ch.before is None else str(ch.before),
                    str(a.state),
                    a.updated_at.isoformat(),
                    rec,
                ),
            )
        # The counter as it was when the changes were handed over: ids given out
        # since are stored with their own alarms.
        c.execute("UPDATE meta SET value = ? WHERE key = 'next'", (str(next_n),))


def _put_published_all(c: sqlite3.Connection, published: Mapping[str, int]) -> None:
    for alarm_id, rev in published.items():
        _put_published(c, alarm_id, rev)


def _settle(done: Future[None] | None, exc: BaseException | None) -> None:
    if done is not None and not done.done():
        if exc is None:
            done.set_result(None)
        else:
            done.set_exception(exc)


def _put_published(c: sqlite3.Connection, alarm_id: str, rev: int) -> None:
    c.execute(
        "UPDATE alarms SET published_rev = max(published_rev, ?) WHERE id = ?", (rev, alarm_id)
    )


def _put_ack_result(c: sqlite3.Connection, ack_id: int, status: str, detail: str) -> None:
    c.execute(
        "UPDATE pending_acks SET status = ?, detail = ?, done_at = ? WHERE id = ?",
        (status, detail, time.time(), ack_id),
    )


def _bounded(changes: list[Change]) -> list[Change]:
    """At most MAX_UNSAVED changes; beyond, only the latest of each alarm (its state)."""
    if len(changes) <= MAX_UNSAVED:
        return changes
    latest = {ch.alarm.id: ch for ch in changes}
    return list(latest.values())
