"""The outbox's SQL: schema, consumer bits, and the one transaction each batch commits.

Everything here takes a `sqlite3.Connection` opened by `gateway.storage.sqlitestore.connect`
(autocommit mode, so transactions are explicit) and is called from one thread at a time; `gateway.storage.outbox`
owns the threads and the futures.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.sdk.model import Priority
from gateway.storage.sqlitestore import Schema, transaction

__all__ = [
    "MAX_CONSUMERS",
    "SCHEMA",
    "BatchOutcome",
    "NewRow",
    "StoredState",
    "by_prio",
    "load_state",
    "lowest_pending",
    "reconcile_consumers",
    "repair_after_salvage",
    "write_batch",
]


log = logging.getLogger("gateway.storage.outbox")

SCHEMA_VERSION = 2
# Row ids of the memory tier's file (gateway.storage.outbox_ram) are offset by this:
# card ids (AUTOINCREMENT) stay far below, so one id says which file holds the row.
RAM_BASE = 1 << 50
# `pending` is a signed 64-bit integer: bits 0..62 keep it positive.
MAX_CONSUMERS = 63

# The messages table of the card file, and of the memory tier's (outbox_ram) as `ram`.
MESSAGES_TABLE = """
CREATE TABLE IF NOT EXISTS {db}messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    seq INTEGER NOT NULL,
    prio INTEGER NOT NULL,
    channel TEXT NOT NULL,
    device_kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    pending INTEGER NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0
);
"""

_SCHEMA = (
    MESSAGES_TABLE.format(db="")
    + """
-- Only events are indexed (issue 16): telemetry, almost every row, is read in id order
-- straight from the table, and a commit of telemetry writes one 4 KiB page fewer to
-- the SD card.  No new schema version: an older release reads the file all the same
-- and puts its (prio, id) index back, which the next open of this one drops again, so
-- a rollback needs no migration.
DROP INDEX IF EXISTS messages_prio_id;
CREATE INDEX IF NOT EXISTS messages_events ON messages (id) WHERE prio = 0;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS consumers (name TEXT PRIMARY KEY, bit INTEGER UNIQUE);
INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', 1), ('dropped_telemetry', 0);
"""
)

_INSERT = (
    "INSERT INTO {db}.messages"
    " (seq, prio, channel, device_kind, topic, payload, created, pending, retain)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _add_retain(conn: sqlite3.Connection) -> None:
    # Version 2 added `retain` (alarm states are retained messages); a version-1 file
    # keeps its rows, which were all published without retain.
    conn.execute("ALTER TABLE messages ADD COLUMN retain INTEGER NOT NULL DEFAULT 0")


SCHEMA = Schema("outbox", SCHEMA_VERSION, _SCHEMA, {2: _add_retain})


def by_prio(sql: str, prio: Priority) -> str:
    """`sql` with its `{prio}` filled in as a literal, not a bound parameter.

    The planner uses the events-only index for `prio = 0` only when it sees the 0.
    """
    return sql.format(prio=int(prio))


def reconcile_consumers(conn: sqlite3.Connection, names: Sequence[str]) -> dict[str, int]:
    """Give every configured consumer a bit; release the rows of consumers no longer there.

    Returns name -> mask.  A new consumer only sees messages stored from now on.
    """
    with transaction(conn):
        known: dict[str, int] = dict(conn.execute("SELECT name, bit FROM consumers").fetchall())
        gone = [name for name in known if name not in names]
        for name in gone:
            mask = 1 << known.pop(name)
            conn.execute(
                "UPDATE messages SET pending = pending & ~? WHERE (pending & ?) != 0", (mask, mask)
            )
            conn.execute("DELETE FROM consumers WHERE name = ?", (name,))
        if gone:
            released = conn.execute("DELETE FROM messages WHERE pending = 0").rowcount
            log.info(
                "outbox consumers %s are no longer configured: %d messages only they held deleted",
                ", ".join(sorted(gone)),
                released,
            )
        used = set(known.values())
        for name in names:
            if name not in known:
                bit = min(set(range(MAX_CONSUMERS)) - used)
                used.add(bit)
                known[name] = bit
                conn.execute("INSERT INTO consumers (name, bit) VALUES (?, ?)", (name, bit))
    return {name: 1 << known[name] for name in names}


@dataclass(frozen=True, slots=True)
class StoredState:
    """What the writer keeps in memory between commits, as read from the file."""

    next_seq: int
    dropped_telemetry: int
    depth: Mapping[Priority, int]
    oldest_created: float | None


def load_state(conn: sqlite3.Connection) -> StoredState:
    """Read the counters and per-priority depth (a table scan; done at open only, after
    quick_check has read every page anyway)."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    counts = dict(conn.execute("SELECT prio, COUNT(*) FROM messages GROUP BY prio").fetchall())
    return StoredState(
        next_seq=int(meta["next_seq"]),
        dropped_telemetry=int(meta["dropped_telemetry"]),
        depth={p: int(counts.get(int(p), 0)) for p in Priority},
        oldest_created=_oldest_created(conn),
    )


@dataclass(frozen=True, slots=True)
class NewRow:
    """A message ready to insert: its payload is already built with its seq."""

    seq: int
    prio: Priority
    channel: str
    device_kind: str
    topic: str
    payload: bytes
    created: float
    pending: int
    retain: bool = False


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one committed batch changed."""

    depth: Mapping[Priority, int]
    dropped: int  # oldest telemetry deleted to keep the bound
    oldest_created: float | None
    counters: Mapping[str, int]  # meta key -> value after increment, in request order


def write_batch(
    conn: sqlite3.Connection,
    rows: Sequence[NewRow],
    next_seq: int,
    acks: Iterable[tuple[int, Sequence[int]]],
    increments: Sequence[str],
    depth: Mapping[Priority, int],
    max_messages: int,
    *,
    dropped: int = 0,
    ram: bool = False,
    on_card: Callable[[int], None] | None = None,
) -> BatchOutcome:
    """Insert, acknowledge, enforce the bound and commit, as one transaction.

    `acks` holds (consumer mask, row ids); `dropped` is telemetry refused before it was
    stored (its seqs, below `next_seq`, are skipped) to add to the dropped counter.
    `next_seq` is stored in the same transaction as the rows carrying the seqs below
    it, so a seq is never handed out twice.  On any error the transaction is rolled
    back and the error raised: nothing of the batch is stored.

    With `ram` (gateway.storage.outbox_ram attached) it is two transactions, never one
    over both files (SQLite makes such a one atomic per file only): first the card's
    (events, alarm states, counters, the acks of card rows), then the RAM file's
    (telemetry, its acks, the exact `next_seq`).  The writer numbers a batch's card
    rows before its telemetry, so a crash between the two leaves no gap: the numbers
    of the lost telemetry were never published and are given again.  A RAM file that
    refuses the write (a full tmpfs) sends the telemetry to the card instead.
    `on_card(events)` is called once the card's transaction committed `events` events,
    before the RAM file's transaction: an alarm may be read and published without
    waiting for the readings that came with it.
    """
    new_depth = dict(depth)
    counters: dict[str, int] = {}
    card_rows = [r for r in rows if not (ram and r.prio is Priority.TELEMETRY)]
    ram_rows = [r for r in rows if ram and r.prio is Priority.TELEMETRY]
    card_acks, ram_acks = _acks_by_file(acks)
    pruned = 0
    if not ram or card_rows or card_acks or increments or dropped:
        with transaction(conn):
            _insert(conn, "main", card_rows, new_depth)
            if not ram and (rows or dropped):
                conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (next_seq,))
            if dropped:
                conn.execute(
                    "UPDATE meta SET value = value + ? WHERE key = 'dropped_telemetry'", (dropped,)
                )
            _ack(conn, "main", card_acks, new_depth)
            pruned = _prune(conn, new_depth, max_messages)
            for key in increments:
                (value,) = conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, 1) ON CONFLICT (key)"
                    " DO UPDATE SET value = value + 1 RETURNING value",
                    (key,),
                ).fetchone()
                counters[key] = int(value)
        events = sum(1 for r in card_rows if r.prio is Priority.EVENT)
        if ram and events and on_card is not None:
            on_card(events)
    if ram and (ram_rows or ram_acks or card_rows or dropped):
        try:
            with transaction(conn):
                _insert(conn, "ram", ram_rows, new_depth)
                conn.execute("INSERT OR REPLACE INTO ram.meta VALUES ('next_seq', ?)", (next_seq,))
                _ack(conn, "ram", ram_acks, new_depth)
        except sqlite3.Error as exc:
            if not ram_rows:
                raise
            log.error(
                "outbox: the RAM file refused %d readings (%s): stored on disk", len(ram_rows), exc
            )
            with transaction(conn):
                _insert(conn, "main", ram_rows, new_depth)
                conn.execute(
                    "UPDATE meta SET value = max(value, ?) WHERE key = 'next_seq'", (next_seq,)
                )
    return BatchOutcome(new_depth, pruned, _oldest_created(conn, ram), counters)


def _insert(
    conn: sqlite3.Connection, db: str, rows: Sequence[NewRow], depth: dict[Priority, int]
) -> None:
    if rows:
        conn.executemany(_INSERT.format(db=db), [_values(r) for r in rows])
        for r in rows:
            depth[r.prio] += 1


def _ack(
    conn: sqlite3.Connection,
    db: str,
    acks: Sequence[tuple[int, list[int]]],
    depth: dict[Priority, int],
) -> None:
    for mask, ids in acks:
        id_list = json.dumps(ids)
        conn.execute(
            f"UPDATE {db}.messages SET pending = pending & ~? "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (mask, id_list),
        )
        deleted = conn.execute(
            f"DELETE FROM {db}.messages WHERE id IN (SELECT value FROM json_each(?))"
            " AND pending = 0 RETURNING prio",
            (id_list,),
        ).fetchall()
        for (prio,) in deleted:
            depth[Priority(prio)] -= 1


def _prune(conn: sqlite3.Connection, depth: dict[Priority, int], max_messages: int) -> int:
    """Delete the oldest telemetry on the card beyond the bound; how many."""
    excess = sum(depth.values()) - max_messages
    if excess <= 0 or depth[Priority.TELEMETRY] <= 0:
        return 0
    pruned = int(
        conn.execute(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE prio = ?"
            " ORDER BY id LIMIT ?)",
            (int(Priority.TELEMETRY), excess),
        ).rowcount
    )
    depth[Priority.TELEMETRY] -= pruned
    conn.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped_telemetry'", (pruned,))
    return pruned


def _acks_by_file(
    acks: Iterable[tuple[int, Sequence[int]]],
) -> tuple[list[tuple[int, list[int]]], list[tuple[int, list[int]]]]:
    """(card acks, RAM acks): card ids as they are, RAM ids less `RAM_BASE`."""
    card: list[tuple[int, list[int]]] = []
    ram: list[tuple[int, list[int]]] = []
    for mask, ids in acks:
        if low := [i for i in ids if i < RAM_BASE]:
            card.append((mask, low))
        if high := [i - RAM_BASE for i in ids if i >= RAM_BASE]:
            ram.append((mask, high))
    return card, ram


def _values(r: NewRow) -> tuple[object, ...]:
    return (
        r.seq,
        int(r.prio),
        r.channel,
        r.device_kind,
        r.topic,
        r.payload,
        r.created,
        r.pending,
        int(r.retain),
    )


def lowest_pending(
    conn: sqlite3.Connection,
    masks: Mapping[str, int],
    next_seq: int,
    ram: bool = False,
    held: Mapping[int, int] | None = None,
) -> dict[str, int]:
    """Consumer name -> lowest seq still waiting for it, or `next_seq` if none waits.

    Walks each priority from its oldest row (events by their index, telemetry by the
    table) and stops at the first one the consumer still holds: seq grows with id, so
    that is the lowest.  `held`: row id -> consumers whose ack of it is not yet
    written (outbox_ram.CardAcks): delivered, so not waiting.
    """
    lowest: dict[str, int] = {}
    for name, mask in masks.items():
        skip = json.dumps([i for i, m in (held or {}).items() if m & mask])
        found = [
            row[0]
            for prio in Priority
            if (
                row := conn.execute(
                    by_prio(
                        "SELECT seq FROM messages WHERE prio = {prio} AND seq > 0"
                        " AND (pending & ?) != 0 AND id NOT IN (SELECT value FROM json_each(?))"
                        " ORDER BY id LIMIT 1",
                        prio,
                    ),
                    (mask, skip),
                ).fetchone()
            )
            is not None
        ]
        if ram:
            row = conn.execute(
                "SELECT seq FROM ram.messages WHERE seq > 0 AND (pending & ?) != 0"
                " ORDER BY id LIMIT 1",
                (mask,),
            ).fetchone()
            if row is not None:
                found.append(row[0])
        lowest[name] = min(found, default=next_seq)
    return lowest


# When the damaged file no longer says which seq comes next, the new counter starts
# this far above the highest salvaged one: more than a gateway commits in a day at
# 1,000 messages a second is not needed, the platform only has to see it as one gap.
SEQ_MARGIN_UNKNOWN = 100_000


def repair_after_salvage(
    conn: sqlite3.Connection,
    lost_ids: Sequence[tuple[int, int | None]],
    meta_lost: bool,
    next_seq: int | None,
) -> list[list[int]]:
    """Make a salvaged outbox safe to go on with; returns the seq ranges that were lost.

    `lost_ids` are the row-id ranges that could not be read.  For each, the numbers
    between the salvaged rows on either side may have been in it: a platform that has
    not received one of them will not get it.  `next_seq` is the writer's counter (run
    time) or None (at open: the file's, or far above every salvaged seq when that is
    unreadable).
    """
    (max_seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()
    (stored,) = conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
    ranges: list[list[int]] = []
    if next_seq is None:
        next_seq = max(int(stored), max_seq + 1)
        if meta_lost:
            ranges.append([max_seq + 1, next_seq + SEQ_MARGIN_UNKNOWN - 1])
            next_seq += SEQ_MARGIN_UNKNOWN
    next_seq = max(next_seq, int(stored), max_seq + 1)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (next_seq,))
    for first, last in lost_ids:
        before = conn.execute(
            "SELECT seq FROM messages WHERE id < ? AND seq > 0 ORDER BY id DESC LIMIT 1", (first,)
        ).fetchone()
        after = (
            None
            if last is None
            else conn.execute(
                "SELECT seq FROM messages WHERE id > ? AND seq > 0 ORDER BY id LIMIT 1", (last,)
            ).fetchone()
        )
        low = before[0] + 1 if before else 1
        high = after[0] - 1 if after else next_seq - 1
        if low <= high:
            ranges.append([low, high])
    ranges.sort()
    merged: list[list[int]] = []
    for low, high in ranges:
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return merged


def _oldest_created(conn: sqlite3.Connection, ram: bool = False) -> float | None:
    # ids grow with time, so the lowest id is the oldest row: one primary-key lookup.
    # Card rows are older than RAM rows, except events, which go to the card at once.
    found = [
        float(row[0])
        for db in (("main", "ram") if ram else ("main",))
        if (
            row := conn.execute(f"SELECT created FROM {db}.messages ORDER BY id LIMIT 1").fetchone()
        )
    ]
    return min(found, default=None)
