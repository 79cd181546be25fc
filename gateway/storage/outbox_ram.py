"""The outbox's memory tier: telemetry the broker takes at once never touches the SD card.

Why (issue 16): each commit to the card dirties at least one 4 KiB page, whatever it
holds, so a reading committed on its own cost 20 KB of card writes at the demo's load
(3 readings a second, spread out) - 6.8 GB a day - and batching enough readings per
commit to get under 1 KB would make every reading wait a second or more.

So telemetry is committed first to a second SQLite file on a RAM file system (tmpfs:
`$RUNTIME_DIRECTORY` under systemd, else /dev/shm), attached to the outbox's
connection as `ram`, with `synchronous=OFF`: a commit there costs no card write and
still survives a crash of the process (kill -9, OOM, a bug): the kernel keeps the file.
What the broker has not acknowledged within `spill_after_s` (a slow or lost broker) is
moved to the card file, so an outage backlog survives a power cut as before; at a
clean stop everything left is moved too, so the card file alone is the outbox between
runs, as an older release expects.

`seq` stays exact across a crash of the process: the RAM file holds the next number.
The card file holds a reservation above it (`next_seq` in its meta, raised by
`SEQ_BLOCK` numbers at a time with one synced commit): after a power cut the RAM file
is gone, and counting goes on from the reservation, so no number is ever given twice;
the readings that were in RAM are lost with it, and the numbers up to the reservation
may never have been used: a `gateway.storage` event `unclean_stop` names that range
(`lost_seq`), from the lowest reading in RAM at the last reservation.

RAM rows have ids `RAM_BASE + rowid`, above every card row id, so that readers, acks
and the cursors of consumers tell the two files apart without a new field.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.sdk.model import Priority
from gateway.storage.outbox_sql import MESSAGES_TABLE, RAM_BASE
from gateway.storage.outbox_types import Ack
from gateway.storage.sqlitestore import transaction as _tx

__all__ = [
    "CARD_ACK_DELAY_S",
    "RAM_BASE",
    "SEQ_BLOCK",
    "CardAcks",
    "RamTier",
    "default_ram_dir",
    "ram_file",
]

log = logging.getLogger("gateway.storage.outbox")

# Numbers reserved on the card at a time: one synced commit per this many messages;
# after a power cut at most this many numbers are skipped (and announced).
SEQ_BLOCK = 1024
# Telemetry the broker has not acknowledged this long goes to the card (power cuts).
SPILL_AFTER_S = 1.0
# And so does the oldest telemetry when the RAM file holds more rows than this.
MAX_RAM_ROWS = 5_000
# Acknowledgements of rows on the card (events, alarm states, readings spilled in an
# outage) wait this long for a commit that writes the card anyway (the next event):
# an ack committed on its own costs the card an fsync and a few pages, and one lost
# in a crash only costs a duplicate (at-least-once).
CARD_ACK_DELAY_S = 30.0

_RAM_SCHEMA = (
    MESSAGES_TABLE.format(db="ram.")
    + """
CREATE TABLE IF NOT EXISTS ram.meta (key TEXT PRIMARY KEY, value);
"""
)
_COLUMNS = "seq, prio, channel, device_kind, topic, payload, created, pending, retain"


def default_ram_dir() -> Path | None:
    """Where the RAM file goes: systemd's runtime directory, else /dev/shm; None: no tmpfs."""
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if runtime:
        return Path(runtime)
    shm = Path("/dev/shm")
    if _is_ram_fs(shm):
        return shm / f"community-gateway-{os.getuid()}"
    return None


def _is_ram_fs(path: Path) -> bool:
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    return any(
        (fields := line.split())[1:2] == [str(path)] and fields[2] in ("tmpfs", "ramfs")
        for line in mounts
        if len(line.split()) > 2
    )


def ram_file(card_file: Path, ram_dir: Path) -> Path:
    """The RAM file of one outbox: named after the card file's absolute path."""
    digest = hashlib.sha256(str(card_file.resolve()).encode()).hexdigest()[:20]
    return ram_dir / f"outbox-{digest}.db"


@dataclass(frozen=True, slots=True)
class Resumed:
    """How counting goes on after `RamTier.attach`."""

    next_seq: int  # exact, or the reservation after a power cut
    skipped: tuple[int, int] | None  # numbers perhaps never used (power cut), else None
    kept_rows: int  # readings kept in RAM across a crash of the process


class RamTier:
    """The RAM file attached to the outbox's write connection; used by the writer only."""

    def __init__(self, path: Path, spill_after_s: float = SPILL_AFTER_S) -> None:
        self.path = path
        self.spill_after_s = spill_after_s
        self.reserved = 0  # the card's next_seq: no number at or above it was given out
        # (monotonic time, last RAM row id, rows) per commit that put telemetry in RAM:
        # what is still there `spill_after_s` later goes to the card.
        self._in_ram: deque[tuple[float, int, int]] = deque()
        self._rows = 0
        self._warned = -math.inf

    # -- open and close -------------------------------------------------------------

    def attach(self, conn: sqlite3.Connection, next_seq_card: int) -> Resumed:
        """Attach the RAM file and decide where counting goes on; reserves a block.

        `next_seq_card` is the card file's `next_seq`: exact after a clean stop, a
        reservation after an unclean one.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        tier = meta.get("ram_tier")
        self._attach(conn)
        ram_meta = dict(conn.execute("SELECT key, value FROM ram.meta").fetchall())
        skipped: tuple[int, int] | None = None
        kept = 0
        if tier is not None and ram_meta.get("tier") == tier:
            # The process stopped and the machine did not: the RAM file is exact.
            (top,) = conn.execute("SELECT coalesce(max(seq), 0) FROM main.messages").fetchone()
            next_seq = max(int(ram_meta.get("next_seq", 0)), int(top) + 1, 1)
            kept = int(conn.execute("SELECT count(*) FROM ram.messages").fetchone()[0])
            if kept:  # their spill clock starts now
                log.info("outbox: %d readings kept in memory across the restart", kept)
                self.noted(conn, kept)
        else:
            if ram_meta:  # another card file's, or a stale one: not ours to publish
                log.warning("outbox: %s belongs to another outbox file; emptied", self.path)
                self._empty(conn)
            next_seq = next_seq_card
            if tier is not None and str(meta.get("clean")) != "1":
                # Unclean stop and the RAM file is gone: the machine lost power.
                first = int(meta.get("reserved_from", next_seq))
                if first < next_seq:
                    skipped = (first, next_seq - 1)
            tier = uuid.uuid4().hex
        with _tx(conn):
            conn.execute("INSERT OR REPLACE INTO ram.meta VALUES ('tier', ?)", (tier,))
            conn.execute("INSERT OR REPLACE INTO ram.meta VALUES ('next_seq', ?)", (next_seq,))
        self._reserve(conn, next_seq, tier=tier)
        return Resumed(next_seq, skipped, kept)

    def reattach(self, conn: sqlite3.Connection, next_seq: int) -> None:
        """After the card file was rebuilt under the writer: same RAM file, new reservation."""
        self._attach(conn)
        tier = conn.execute("SELECT value FROM ram.meta WHERE key = 'tier'").fetchone()
        self._reserve(conn, next_seq, tier=None if tier is None else str(tier[0]))

    def _attach(self, conn: sqlite3.Connection) -> None:
        conn.execute("ATTACH DATABASE ? AS ram", (str(self.path),))
        try:
            conn.execute("PRAGMA ram.journal_mode = WAL")
            # No fsync: it is RAM.  A crash of the process still loses nothing committed.
            conn.execute("PRAGMA ram.synchronous = OFF")
            conn.executescript(_RAM_SCHEMA)
            conn.execute("SELECT count(*) FROM ram.messages").fetchone()
        except sqlite3.DatabaseError as exc:
            log.error("outbox: %s unreadable (%s): started again empty", self.path, exc)
            conn.execute("DETACH DATABASE ram")
            _remove(self.path)
            conn.execute("ATTACH DATABASE ? AS ram", (str(self.path),))
            conn.execute("PRAGMA ram.journal_mode = WAL")
            conn.execute("PRAGMA ram.synchronous = OFF")
            conn.executescript(_RAM_SCHEMA)

    def _empty(self, conn: sqlite3.Connection) -> None:
        with _tx(conn):
            conn.execute("DELETE FROM ram.messages")
            conn.execute("DELETE FROM ram.meta")

    def close(self, conn: sqlite3.Connection, next_seq: int) -> int:
        """At a clean stop: everything to the card, the exact `next_seq` on it; RAM file removed.

        Returns how many rows were moved.  On failure the RAM file stays and the card
        keeps its reservation: the next start picks up from there.
        """
        moved = self.spill(conn, None)
        with _tx(conn):
            conn.execute("UPDATE main.meta SET value = ? WHERE key = 'next_seq'", (next_seq,))
            conn.execute("INSERT OR REPLACE INTO main.meta VALUES ('clean', 1)")
        conn.execute("DETACH DATABASE ram")
        _remove(self.path)
        return moved

    # -- run time -------------------------------------------------------------------

    def ensure_reserved(self, conn: sqlite3.Connection, next_seq: int) -> None:
        """Before numbers below `next_seq` are committed: the card's reservation covers them."""
        if next_seq > self.reserved:
            self._reserve(conn, next_seq, tier=None)

    def _reserve(self, conn: sqlite3.Connection, next_seq: int, *, tier: str | None) -> None:
        # Its own synced commit, before any row numbered above the old reservation is
        # committed: a power cut can then never make a number be given twice.
        reserved = next_seq + SEQ_BLOCK
        # Lost in a power cut would be the readings in RAM then: from the lowest waiting
        # now (or numbered later) up to the reservation.
        (low,) = conn.execute("SELECT min(seq) FROM ram.messages WHERE seq > 0").fetchone()
        first = next_seq if low is None else min(int(low), next_seq)
        with _tx(conn):
            conn.execute("UPDATE main.meta SET value = ? WHERE key = 'next_seq'", (reserved,))
            conn.execute("INSERT OR REPLACE INTO main.meta VALUES ('reserved_from', ?)", (first,))
            conn.execute("INSERT OR REPLACE INTO main.meta VALUES ('clean', 0)")
            if tier is not None:
                conn.execute("INSERT OR REPLACE INTO main.meta VALUES ('ram_tier', ?)", (tier,))
        self.reserved = reserved

    def noted(self, conn: sqlite3.Connection, rows: int) -> None:
        """A commit just put `rows` readings in RAM: start their spill clock."""
        if rows <= 0:
            return
        (top,) = conn.execute(
            "SELECT seq FROM ram.sqlite_sequence WHERE name = 'messages'"
        ).fetchone()
        self._in_ram.append((time.monotonic(), RAM_BASE + int(top), rows))
        self._rows += rows

    def next_spill(self) -> float | None:
        """When (monotonic) the oldest readings in RAM are due on the card; None: none wait."""
        if not self._in_ram:
            return None
        return self._in_ram[0][0] + (0.0 if self._rows > MAX_RAM_ROWS else self.spill_after_s)

    def spill_due(self, conn: sqlite3.Connection) -> int:
        """Move what waited too long (or beyond the bound) to the card; how many moved.

        On an error (a full or failing card) the readings stay in RAM, due again at once.
        """
        due = time.monotonic() - self.spill_after_s
        up_to, rows = None, 0
        while self._in_ram and (self._in_ram[0][0] <= due or self._rows > MAX_RAM_ROWS):
            _, up_to, n = self._in_ram.popleft()
            self._rows -= n
            rows += n
        if up_to is None:
            return 0
        try:
            return self.spill(conn, up_to)
        except sqlite3.Error as exc:
            self._in_ram.appendleft((due, up_to, rows))
            self._rows += rows
            if (now := time.monotonic()) - self._warned >= 60:
                self._warned = now
                log.error(
                    "outbox: unacknowledged readings cannot go to disk (%s): kept in RAM", exc
                )
            return 0

    @staticmethod
    def unclean_report(card_file: Path, skipped: tuple[int, int]) -> dict[str, object]:
        """The `gateway.storage` data after a power cut: which numbers may not come."""
        log.warning(
            "outbox: the last run stopped uncleanly with the machine (power cut?):"
            " seq %d to %d may not all have been used",
            *skipped,
        )
        return {
            "store": "outbox",
            "problem": "unclean_stop",
            "file": card_file.name,
            "reason": "the gateway lost power (or its host crashed) while running",
            "lost_seq": [list(skipped)],
        }

    def spill(self, conn: sqlite3.Connection, up_to: int | None) -> int:
        """Move RAM rows with id <= `up_to` (None: all) to the card file; how many moved.

        Two commits, card first: a crash in between leaves a row in both files, sent
        twice (at-least-once allows that), never in neither.
        """
        bound = RAM_BASE * 2 if up_to is None else up_to - RAM_BASE
        with _tx(conn):
            moved = conn.execute(
                f"INSERT INTO main.messages ({_COLUMNS})"
                f" SELECT {_COLUMNS} FROM ram.messages WHERE id <= ? ORDER BY id",
                (bound,),
            ).rowcount
        if moved:
            with _tx(conn):
                conn.execute("DELETE FROM ram.messages WHERE id <= ?", (bound,))
        return int(moved)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").unlink()


class CardAcks:
    """Acks of card rows held back for a commit that writes the card anyway.

    What they would deliver is kept up to date as acks come (`delivered`), each row
    read once: after an outage the held acks of spilled readings reach tens of
    thousands, and counting them all again after every commit made the writer slower
    the longer the backlog, until it fell behind for good (issue 16).
    """

    def __init__(self) -> None:
        self._held: list[Ack] = []
        self.since: float | None = None  # monotonic time of the oldest held
        self._masks: dict[int, int] = {}  # row id -> the consumers whose ack is held
        self._unread: set[int] = set()  # held ids not yet looked at in `delivered`
        self._rows: dict[int, tuple[Priority, int]] = {}  # id -> (prio, pending) stored
        self._covered: set[int] = set()  # ids the held acks would delete
        self._counts: dict[Priority, int] = {}

    def held(self) -> Mapping[int, int]:
        """Row id -> the consumers (mask) whose ack of it is held (do not modify)."""
        return self._masks

    def due_at(self) -> float | None:
        return None if self.since is None else self.since + CARD_ACK_DELAY_S

    def now(self, acks: list[Ack], card_write: bool, stopping: bool) -> list[Ack]:
        """The acks to commit now: all of RAM rows; card rows' with a card write, or when due."""
        out: list[Ack] = []
        for ack in acks:
            if ram_ids := tuple(i for i in ack.ids if i >= RAM_BASE):
                out.append(Ack(ack.mask, ram_ids))
            if card_ids := tuple(i for i in ack.ids if i < RAM_BASE):
                self._held.append(Ack(ack.mask, card_ids))
                for i in card_ids:
                    self._masks[i] = self._masks.get(i, 0) | ack.mask
                self._unread.update(card_ids)
        if not self._held:
            return out
        if self.since is None:
            self.since = time.monotonic()
        if card_write or stopping or time.monotonic() >= self.since + CARD_ACK_DELAY_S:
            out += self._held
            self._held, self.since = [], None
            self._masks, self._unread, self._rows, self._covered = {}, set(), {}, set()
            self._counts = {}
        return out

    def delivered(self, conn: sqlite3.Connection) -> dict[Priority, int]:
        """Per priority, the card rows the held acks would delete."""
        if self._unread:
            if new := [i for i in self._unread if i not in self._rows]:
                for row_id, prio, pending in conn.execute(
                    "SELECT id, prio, pending FROM messages"
                    " WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps(new),),
                ):
                    self._rows[row_id] = (Priority(prio), pending)
            for i in self._unread:
                row = self._rows.get(i)  # None: gone (pruned), nothing left to delete
                if row is not None and i not in self._covered and row[1] & ~self._masks[i] == 0:
                    self._covered.add(i)
                    self._counts[row[0]] = self._counts.get(row[0], 0) + 1
            self._unread = set()
        return dict(self._counts)
