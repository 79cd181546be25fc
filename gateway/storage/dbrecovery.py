"""Damaged SQLite files: find them at open or on a read, move them aside, salvage the rows.

One helper for every database of the gateway (the outbox, the alarm store, the kiosk's
request store): a power cut or a worn SD card can leave any of them with pages that
SQLite refuses ("database disk image is malformed", "file is not a database").  Such a
file is never opened again in place, because every later read of the bad page fails
the same way (a zombie) and every restart too (a restart loop).  Instead:

1. the file (with its -wal, which may hold the newest pages) is renamed to
   `NAME.damaged-YYYYmmddTHHMMSSZ` next to it, kept for a post-mortem;
2. a fresh file is made with the store's own schema;
3. every table of the fresh schema is filled from the damaged copy, in rowid order,
   stepping over pages that cannot be read; the rowid ranges that could not be read
   are reported, so the store can say what it lost (the outbox turns them into seq
   ranges for the platform).

`is_damage` tells a damaged file apart from a full disk or a locked file, which are
not repaired by moving anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from gateway.storage import sqlitepages as pages

__all__ = ["Salvage", "is_damage", "open_checked", "problem", "rebuild"]

log = logging.getLogger(__name__)

# TOOBIG: a damaged record header can claim a value longer than SQLite's limit (1 GB);
# every value this gateway stores is bounded far below that, so reading one is damage.
# Seen with random bytes over an outbox: quick_check raised "string or blob too big".
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_TOOBIG})
_CHUNK = 512  # rows per read: a damaged page costs at most the rows after it in a chunk
_MAX_ROWID = 2**63 - 1
_MAX_RANGES = 16


def is_damage(exc: BaseException) -> bool:
    """True for an error that says the file itself is damaged (not full, not locked)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _DAMAGE_CODES
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text or "too big" in text


def problem(path: Path) -> str | None:
    """What is wrong with the file at `path`, or None if it is absent or passes quick_check.

    quick_check reads every page of every table and index (about 0.1 s for a 30 MB
    outbox on an SD card) but skips the slower cross-checks of integrity_check.
    """
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return str(exc)
    finally:
        conn.close()
    found = [str(r[0]) for r in rows]
    return None if found == ["ok"] else "; ".join(found[:3])


@dataclass(frozen=True, slots=True)
class Salvage:
    """What `rebuild` did: where the damaged file went, what it copied and what it lost."""

    path: Path
    moved_to: Path
    reason: str
    copied: dict[str, int] = field(default_factory=dict)  # table -> rows copied
    # table -> rowid ranges (first, last) that could not be read; last None: to the end.
    lost: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)

    @property
    def rows_copied(self) -> int:
        return sum(self.copied.values())

    def as_dict(self) -> dict[str, object]:
        """The report as plain JSON-ready data (for a `gateway.storage` event)."""
        return {
            "problem": "damaged",
            "file": self.path.name,
            "moved_to": self.moved_to.name,
            "reason": self.reason,
            "rows_salvaged": self.rows_copied,
            "tables_damaged": sorted(t for t, ranges in self.lost.items() if ranges),
        }


def rebuild(
    path: Path,
    create: Callable[[sqlite3.Connection], None],
    reason: str,
    *,
    connect: Callable[[Path], sqlite3.Connection] | None = None,
) -> Salvage:
    """Move the damaged file aside, make a fresh one with `create`, copy what can be read.

    `create` makes the store's schema on an open connection (and may insert default
    rows: salvaged rows replace rows with the same key).  `connect` opens the fresh
    file as the store does (pragmas); by default a plain autocommit connection.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    moved = path.with_name(f"{path.name}.damaged-{stamp}")
    os.replace(path, moved)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            # The WAL goes along under the matching name, so opening the moved copy
            # reads the newest committed pages too; the -shm index is rebuilt from it.
            if suffix == "-wal":
                os.replace(side, Path(f"{moved}{suffix}"))
            else:
                side.unlink()
    log.error("%s is damaged (%s): moved to %s, salvaging what can be read", path, reason, moved)
    fresh = (connect or _plain)(path)
    copied: dict[str, int] = {}
    lost: dict[str, list[tuple[int, int | None]]] = {}
    try:
        create(fresh)
        with contextlib.closing(_plain(moved)) as src:
            src.text_factory = _text
            tables = [
                name
                for (name,) in fresh.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            fresh.execute("BEGIN IMMEDIATE")
            for table in tables:
                copied[table], lost[table] = _copy_table(src, fresh, table)
            _copy_autoincrement(src, fresh)
            fresh.execute("COMMIT")
        if any(lost.values()):
            # A damaged interior page hides every leaf below it from the walk by rowid:
            # read the leaf pages themselves for the rows the walk could not reach.
            found = pages.scan(moved, _shapes(fresh))
            fresh.execute("BEGIN IMMEDIATE")
            for table, rows in found.items():
                if lost.get(table):
                    added = _insert_missing(fresh, table, rows)
                    copied[table] += added
                    lost[table] = _still_lost(fresh, table, lost[table])
            fresh.execute("COMMIT")
    except BaseException:
        if fresh.in_transaction:
            fresh.execute("ROLLBACK")
        fresh.close()
        raise
    fresh.close()
    salvage = Salvage(path, moved, reason, copied, {t: r for t, r in lost.items() if r})
    log.warning(
        "%s rebuilt: %d rows salvaged%s",
        path,
        salvage.rows_copied,
        "".join(f"; {t}: rowids {_ranges(r)} unreadable" for t, r in salvage.lost.items()),
    )
    return salvage


def open_checked(
    path: Path,
    connect: Callable[[Path], sqlite3.Connection],
    create: Callable[[sqlite3.Connection], None],
) -> tuple[sqlite3.Connection, Salvage | None]:
    """Open a store's file the way every store should: checked, rebuilt if damaged.

    `connect` opens the file with the store's pragmas, `create` makes its schema (and
    migrates).  Returns the open connection and, if the file had to be rebuilt, what
    was salvaged, for the store to report as a `gateway.storage` event.
    """
    salvage = None
    reason = problem(path)
    if reason is not None:
        salvage = rebuild(path, create, reason, connect=connect)
    try:
        conn = connect(path)
    except sqlite3.DatabaseError as exc:
        if salvage is not None or not is_damage(exc):
            raise
        salvage = rebuild(path, create, str(exc), connect=connect)
        conn = connect(path)
    try:
        create(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if salvage is not None or not is_damage(exc):
            raise
        salvage = rebuild(path, create, str(exc), connect=connect)
        conn = connect(path)
        create(conn)
    except BaseException:
        conn.close()
        raise
    return conn, salvage


def _plain(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None, check_same_thread=False)


class _Undecodable:
    """Stands for a damaged text value: its row is left out, not copied as garbage."""


_BAD = _Undecodable()


def _text(raw: bytes) -> str | _Undecodable:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return _BAD


def _ranges(ranges: list[tuple[int, int | None]]) -> str:
    return ", ".join(f"{a}-{'end' if b is None else b}" for a, b in ranges)


def _copy_table(
    src: sqlite3.Connection, dst: sqlite3.Connection, table: str
) -> tuple[int, list[tuple[int, int | None]]]:
    columns = [row[1] for row in dst.execute(f'PRAGMA table_info("{table}")')]
    try:
        have = {row[1] for row in src.execute(f'PRAGMA table_info("{table}")')}
    except sqlite3.DatabaseError as exc:
        if not is_damage(exc):
            raise
        return 0, [(1, None)]  # not even the schema is readable
    if not have:
        return 0, []  # a table the damaged file never had (an older version)
    common = [c for c in columns if c in have]
    names = ", ".join(f'"{c}"' for c in common)
    insert = f'INSERT OR REPLACE INTO "{table}" (rowid, {names}) VALUES ({", ".join("?" * (len(common) + 1))})'
    select = f'SELECT rowid, {names} FROM "{table}" WHERE rowid > ? ORDER BY rowid LIMIT {_CHUNK}'
    n = 0
    lost: list[tuple[int, int | None]] = []
    for rows, gap in _readable(src, select, table):
        good = [r for r in rows if _BAD not in r]
        if good:
            dst.executemany(insert, good)
            n += len(good)
        lost.extend((int(r[0]), int(r[0])) for r in rows if _BAD in r)  # type: ignore[call-overload]
        if gap is not None:
            lost.append(gap)
    return n, sorted(lost, key=lambda r: r[0])


def _readable(
    src: sqlite3.Connection, select: str, table: str
) -> Iterator[tuple[list[tuple[object, ...]], tuple[int, int | None] | None]]:
    """Yield (rows, unreadable rowid range or None) in rowid order until the end."""
    after = -_MAX_ROWID - 1
    while True:
        rows: list[tuple[object, ...]] = []
        try:
            for row in src.execute(select, (after,)):
                rows.append(tuple(row))
        except sqlite3.DatabaseError as exc:
            if rows:
                after = int(rows[-1][0])  # type: ignore[call-overload]
            bad = _undecodable_row(src, table, after, exc)
            if bad is not None:
                yield rows, (bad, bad)
                after = bad
                continue
            if not is_damage(exc):
                raise
            resume = _next_readable(src, table, after)
            gap = (max(after + 1, 1), None if resume is None else resume - 1)
            yield rows, gap
            if resume is None:
                return
            after = resume - 1
            continue
        if not rows:
            return
        yield rows, None
        after = int(rows[-1][0])  # type: ignore[call-overload]


def _undecodable_row(
    src: sqlite3.Connection, table: str, after: int, exc: sqlite3.DatabaseError
) -> int | None:
    """The rowid of the row after `after` if `exc` says its text is not UTF-8, else None.

    Damaged bytes inside a page whose structure still reads (no SQLite error) show up
    as a TEXT value Python's sqlite3 cannot decode: only that row is lost.  The walk by
    rowid alone still reads it, so `_next_readable` would resume right on it again.
    """
    if not str(exc).startswith("Could not decode to UTF-8"):
        return None
    try:
        row = src.execute(
            f'SELECT rowid FROM "{table}" WHERE rowid > ? ORDER BY rowid LIMIT 1', (after,)
        ).fetchone()
    except sqlite3.DatabaseError as probe_exc:
        if not is_damage(probe_exc):
            raise
        return None
    return None if row is None else int(row[0])


def _next_readable(src: sqlite3.Connection, table: str, after: int) -> int | None:
    """The lowest rowid above `after` from which reading works again; None: none left.

    Doubling steps find a start beyond the damage, then bisection the first such start:
    at most about 2 x 63 probes, each one index seek.
    """
    probe = f'SELECT rowid FROM "{table}" WHERE rowid >= ? ORDER BY rowid LIMIT 1'

    def first_from(start: int) -> int | bool | None:
        # The first rowid at or after start; None past the end; False: unreadable.
        try:
            row = src.execute(probe, (start,)).fetchone()
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
            return False
        return None if row is None else int(row[0])

    bad, step = max(after, 0) + 1, 1
    while True:
        good = min(bad + step, _MAX_ROWID)
        found = first_from(good)
        if found is not False:
            break
        if good == _MAX_ROWID:
            return None
        bad, step = good, step * 2
    # first_from(bad) fails, first_from(good) works: find the lowest working start.
    while good - bad > 1:
        mid = (bad + good) // 2
        at = first_from(mid)
        if at is False:
            bad = mid
        else:
            good, found = mid, at
    return found if found is not False else None


def _shapes(conn: sqlite3.Connection) -> dict[str, list[pages.Column]]:
    """The columns of every table whose rows a leaf page can be matched to."""
    shapes: dict[str, list[pages.Column]] = {}
    for (table,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    ).fetchall():
        shapes[table] = [
            pages.Column(name, str(decl).upper(), bool(notnull), bool(pk))
            for _, name, decl, notnull, _, pk in conn.execute(f'PRAGMA table_info("{table}")')
        ]
    return shapes


def _insert_missing(
    conn: sqlite3.Connection, table: str, rows: list[tuple[int, tuple[object, ...]]]
) -> int:
    # An INTEGER PRIMARY KEY is the rowid itself (NULL in the record): leave it out.
    columns = [
        (row[1], row[5] and "INT" in str(row[2]).upper())
        for row in conn.execute(f'PRAGMA table_info("{table}")')
    ]
    added = 0
    for rowid, values in rows:
        pairs = [(c, v) for (c, alias), v in zip(columns, values, strict=False) if not alias]
        names = ", ".join(f'"{c}"' for c, _ in pairs)
        marks = ", ".join("?" * (len(pairs) + 1))
        sql = f'INSERT OR IGNORE INTO "{table}" (rowid, {names}) VALUES ({marks})'
        try:
            added += conn.execute(sql, (rowid, *(v for _, v in pairs))).rowcount
        except sqlite3.Error:
            continue  # a leaf row that does not fit after all (NOT NULL, a duplicate key)
    return added


def _still_lost(
    conn: sqlite3.Connection, table: str, ranges: list[tuple[int, int | None]]
) -> list[tuple[int, int | None]]:
    """The parts of `ranges` no salvaged row falls in (at most _MAX_RANGES of them)."""
    out: list[tuple[int, int | None]] = []
    for first, last in ranges:
        present = [
            r
            for (r,) in conn.execute(
                f'SELECT rowid FROM "{table}" WHERE rowid >= ? AND rowid <= ? ORDER BY rowid',
                (first, _MAX_ROWID if last is None else last),
            )
        ]
        start = first
        for rowid in present:
            if rowid > start:
                out.append((start, rowid - 1))
            start = rowid + 1
        if last is None or start <= last:
            out.append((start, last))
    # Holes left by delivered rows split a range into many: keep the report short by
    # joining the closest neighbours (a wider range only says "maybe", never less).
    while len(out) > _MAX_RANGES:
        i = min(range(len(out) - 1), key=lambda k: out[k + 1][0] - (out[k][1] or 0))
        out[i : i + 2] = [(out[i][0], out[i + 1][1])]
    return out


def _copy_autoincrement(src: sqlite3.Connection, dst: sqlite3.Connection) -> None:
    # AUTOINCREMENT ids must never be reused (an outbox row id in flight, an ack id):
    # keep the highest value handed out, if the damaged file still says it.
    try:
        rows = src.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
    except sqlite3.DatabaseError:
        return
    for name, seq in rows:
        updated = dst.execute(
            "UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?", (seq, name)
        ).rowcount
        if not updated:
            with contextlib.suppress(sqlite3.Error):
                dst.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))
