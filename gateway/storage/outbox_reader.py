"""Reading the outbox: one read connection per consumer thread, held events first.

A reader sees the events the disk refused (held in memory, negative ids) before the
stored rows, and follows the writer to a rebuilt file.  WAL readers never block the
writer.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

from gateway.sdk.model import Priority
from gateway.storage import dbrecovery
from gateway.storage.outbox_memory import Unstored
from gateway.storage.outbox_ram import RAM_BASE
from gateway.storage.outbox_sql import NewRow, by_prio
from gateway.storage.outbox_types import Row

__all__ = ["OutboxReader"]

log = logging.getLogger("gateway.storage.outbox")


class OutboxReader:
    """A read connection on the outbox; use it from one thread at a time."""

    _SELECT = (
        "SELECT id, seq, prio, topic, payload, created, retain FROM messages"
        " WHERE prio = {prio} AND id > ? AND (pending & ?) != 0 ORDER BY id LIMIT ?"
    )
    # Telemetry in the memory tier, after the card's (older) telemetry; ids offset.
    _SELECT_RAM = (
        "SELECT id + ?, seq, prio, topic, payload, created, retain FROM ram.messages"
        " WHERE id > ? AND (pending & ?) != 0 ORDER BY id LIMIT ?"
    )

    def __init__(
        self,
        connect: Callable[[], tuple[int, sqlite3.Connection]],
        generation: Callable[[], int],
        memory: Unstored,
        report_damage: Callable[[str], None],
        masks: Mapping[str, int],
        ram_path: Path | None = None,
    ) -> None:
        # `connect` returns the file's generation with the connection: a file rebuilt
        # since (`generation()` moved on) is reopened before the next read.
        self._connect = connect
        self._current = generation
        self._memory = memory
        self._report_damage = report_damage
        self._ram_path = ram_path
        self._generation, self._conn = self._open()
        self._masks = masks
        # Per consumer: events held in memory already handed out since the cursor last
        # started over, and the last stored id read per priority (a held event's
        # negative id in `after` says nothing about the stored rows).
        self._held_read: dict[str, set[int]] = {}
        self._stored_after: dict[str, dict[Priority, int]] = {}
        self._ram_after: dict[str, int] = {}  # last RAM row id read, without the offset

    def _open(self) -> tuple[int, sqlite3.Connection]:
        generation, conn = self._connect()
        if self._ram_path is not None:
            conn.execute("ATTACH DATABASE ? AS ram", (str(self._ram_path),))
        return generation, conn

    def counter(self, key: str) -> int:
        """A durable counter's committed value (see `Outbox.meta_increment`); 0 if unset."""
        found = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return 0 if found is None else int(found[0])

    def next_batch(self, consumer: str, after: dict[Priority, int], limit: int) -> list[Row]:
        """Rows still pending for `consumer`: events first, then telemetry, each by id.

        `after[p]` is the last id already read of priority p (missing: 0).  A damaged
        file is reported to the writer, which rebuilds it (row ids are kept), and reads
        nothing until then: a reader never dies of it, nor reads the bad page forever.
        """
        if self._generation != self._current():
            self._conn.close()
            self._generation, self._conn = self._open()
        held_read = self._held_read.setdefault(consumer, set())
        stored_after = self._stored_after.setdefault(consumer, {})
        if all(after.get(p, 0) == 0 for p in Priority):  # a cursor starting over
            held_read.clear()
            stored_after.clear()
            self._ram_after.pop(consumer, None)
        held = [
            _held_row(k, row)
            for k, row in self._memory.pending(self._masks[consumer], held_read)[:limit]
        ]
        held_read.update(r.id for r in held)
        # A consumer's cursor is the id of the last row it got: a held event's (< 0) or a
        # RAM row's (>= RAM_BASE) says nothing about the card's rows, and the reverse.
        cursor = {
            p: a if 0 <= (a := after.get(p, 0)) < RAM_BASE else stored_after.get(p, 0)
            for p in Priority
        }
        last = after.get(Priority.TELEMETRY, 0)
        ram_cursor = last - RAM_BASE if last >= RAM_BASE else self._ram_after.get(consumer, 0)
        try:
            rows = (
                self._read(consumer, cursor, ram_cursor, limit - len(held))
                if len(held) < limit
                else []
            )
        except sqlite3.DatabaseError as exc:
            if not dbrecovery.is_damage(exc):
                raise
            log.error("outbox read failed, file damaged: %s", exc)
            self._report_damage(str(exc))
            return held
        for row in rows:
            if row.id >= RAM_BASE:
                self._ram_after[consumer] = max(ram_cursor, row.id - RAM_BASE)
            else:
                stored_after[row.priority] = max(stored_after.get(row.priority, 0), row.id)
        return held + rows

    def _read(
        self, consumer: str, after: dict[Priority, int], ram_after: int, limit: int
    ) -> list[Row]:
        mask = self._masks[consumer]
        rows: list[Row] = []
        self._conn.execute("BEGIN")  # one snapshot per file, for both priorities
        try:
            # RAM's snapshot before the card's: each file's starts at its first read, and
            # a spill commits a row's card copy before it deletes the RAM one, so a later
            # card snapshot has every row this RAM snapshot lacks.  The other way round
            # a row spilled in between was in neither, and came after newer ones.
            if self._ram_path is not None:
                self._conn.execute("SELECT 1 FROM ram.messages LIMIT 1").fetchall()
            for prio in sorted(Priority):
                if len(rows) >= limit:
                    break
                cursor = self._conn.execute(
                    by_prio(self._SELECT, prio), (after.get(prio, 0), mask, limit - len(rows))
                )
                rows.extend(_rows(cursor))
            if self._ram_path is not None and len(rows) < limit:
                cursor = self._conn.execute(
                    self._SELECT_RAM, (RAM_BASE, ram_after, mask, limit - len(rows))
                )
                rows.extend(_rows(cursor))  # a row in both files is sent twice
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("COMMIT")
        return rows

    def close(self) -> None:
        self._conn.close()


def _rows(cursor: sqlite3.Cursor) -> list[Row]:
    return [
        Row(
            id=i,
            seq=s,
            priority=Priority(p),
            topic=t,
            payload=bytes(b),
            created=c,
            retain=bool(r),
        )
        for i, s, p, t, b, c, r in cursor
    ]


def _held_row(row_id: int, row: NewRow) -> Row:
    return Row(row_id, row.seq, row.prio, row.topic, row.payload, row.created, row.retain)
