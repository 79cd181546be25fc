"""Opening the outbox file checked, and rebuilding it when it goes bad under the writer.

A damaged file is moved aside and its readable rows salvaged (`gateway.storage.dbrecovery`);
the seq counter is then set so that no number is ever handed out twice, and the seq
ranges that could not be read are reported in a `gateway.storage` event.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.storage import dbrecovery
from gateway.storage import outbox_sql as sql
from gateway.storage.sqlitestore import SyncMode, connect

__all__ = ["Opened", "open_file", "reopen_damaged", "stored_next_seq"]

log = logging.getLogger("gateway.storage.outbox")


@dataclass(frozen=True)
class Opened:
    """The write connection, what the file holds, and the `gateway.storage` data to report."""

    conn: sqlite3.Connection
    state: sql.StoredState
    masks: dict[str, int]
    report: dict[str, Any] | None
    rebuilt: bool  # a new file: readers must reopen it


def open_file(path: Path, sync: SyncMode, consumers: Sequence[str]) -> Opened:
    """Open the file, checked first; a damaged one is rebuilt from what can be read."""
    conn, salvage = dbrecovery.open_checked(path, lambda p: connect(p, sync=sync), sql.SCHEMA.apply)
    try:
        report = None if salvage is None else _after_rebuild(conn, salvage, None)
        masks = sql.reconcile_consumers(conn, consumers)
        return Opened(conn, sql.load_state(conn), masks, report, salvage is not None)
    except BaseException:
        conn.close()
        raise


def reopen_damaged(
    path: Path, sync: SyncMode, masks: Mapping[str, int], reason: str, next_seq: int
) -> Opened:
    """Rebuild the file that went bad under the writer (closed by the caller), reopen it.

    `report` is always set: the rebuild's `gateway.storage` data, or the damage alone
    when not even a fresh file could be made (a full or read-only card): then the
    writer goes on with what is there, and the next batch tries again.
    """
    report: dict[str, Any]
    rebuilt = False
    try:
        salvage = dbrecovery.rebuild(
            path, sql.SCHEMA.apply, reason, connect=lambda p: connect(p, sync=sync)
        )
        conn = connect(path, sync=sync)
        try:
            report = _after_rebuild(conn, salvage, next_seq)
            rebuilt = True
        finally:
            conn.close()
    except (OSError, sqlite3.Error) as exc:
        log.error("outbox rebuild failed: %s", exc)
        report = {
            "store": "outbox",
            "problem": "damaged",
            "file": path.name,
            "reason": f"{reason}; rebuild failed: {exc}",
        }
    conn = connect(path, sync=sync)
    sql.SCHEMA.apply(conn)
    # The rows keep their consumer bits: keep the bits' names too, even if the
    # consumers table was on a page that could not be read.
    conn.executemany(
        "INSERT OR REPLACE INTO consumers (name, bit) VALUES (?, ?)",
        [(name, mask.bit_length() - 1) for name, mask in masks.items()],
    )
    return Opened(conn, sql.load_state(conn), dict(masks), report, rebuilt)


def _after_rebuild(
    conn: sqlite3.Connection, salvage: dbrecovery.Salvage, next_seq: int | None
) -> dict[str, Any]:
    """Set the seq counter safely and say which seqs were lost: the `gateway.storage` data.

    `next_seq` is the writer's own counter when the damage shows at run time; at
    open it comes from the file, and if that is unreadable too it is put well
    above every salvaged seq, so that no number is ever given twice.
    """
    lost = sql.repair_after_salvage(
        conn, salvage.lost.get("messages", []), "meta" in salvage.lost, next_seq
    )
    log.error(
        "outbox rebuilt after damage: %d rows salvaged, seq ranges lost: %s",
        salvage.rows_copied,
        lost or "none",
    )
    return {"store": "outbox", **salvage.as_dict(), "lost_seq": lost}


def stored_next_seq(conn: sqlite3.Connection, fallback: int, ram: bool = False) -> int:
    """The next seq to hand out after a failed commit: `fallback`, or the stored one if higher.

    With the memory tier the exact value is in the RAM file (the card holds a reservation).
    """
    # A failed COMMIT may still have reached the disk (e.g. an fsync error after the
    # write): take the stored value if it is higher, so no seq is handed out twice.
    db = "ram" if ram else "main"
    try:
        row = conn.execute(f"SELECT value FROM {db}.meta WHERE key = 'next_seq'").fetchone()
        return max(fallback, int(row[0]))
    except sqlite3.Error:
        return fallback
