"""Rows read straight from the leaf pages of a damaged SQLite file (the file format, no SQL).

SQLite finds a row through the interior pages of its table's b-tree; one damaged
interior page hides every leaf below it, although the leaves themselves are intact.
`scan` reads every table-leaf page of the file (https://sqlite.org/fileformat.html,
sections 1.6 and 2.1), decodes its cells and gives each row to the one table whose
columns it fits.  Pages on the freelist are skipped (they hold deleted rows), and so
are leaf pages whose rows fit no table or more than one.

Call it on a file nobody writes to, after its WAL was checkpointed into it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Column", "scan"]

log = logging.getLogger(__name__)

_LEAF_TABLE = 0x0D
_MAX_OVERFLOW_PAGES = 10_000  # a loop in a damaged overflow chain ends here


@dataclass(frozen=True, slots=True)
class Column:
    """A column as PRAGMA table_info describes it."""

    name: str
    decl: str  # declared type, upper case
    notnull: bool
    pk: bool

    def fits(self, value: object) -> bool:
        if self.pk and "INT" in self.decl:
            return value is None  # INTEGER PRIMARY KEY: stored as NULL, the rowid holds it
        if value is None:
            return not self.notnull
        if "INT" in self.decl:
            return isinstance(value, int)
        if "TEXT" in self.decl or "CHAR" in self.decl:
            return isinstance(value, str)
        if "REAL" in self.decl or "FLOA" in self.decl:
            return isinstance(value, int | float)
        if "BLOB" in self.decl:
            return isinstance(value, bytes | str)
        return True


Row = tuple[int, tuple[object, ...]]  # (rowid, column values)


def scan(path: Path, tables: Mapping[str, Sequence[Column]]) -> dict[str, list[Row]]:
    """Every row of an intact table-leaf page of `path`, by the table it fits."""
    with contextlib.suppress(sqlite3.Error):
        # Newest pages may still be in the -wal beside the file.
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    data = path.read_bytes()
    found: dict[str, list[Row]] = {t: [] for t in tables}
    if len(data) < 100 or not data.startswith(b"SQLite format 3\x00"):
        return found
    page_size = struct.unpack_from(">H", data, 16)[0]
    page_size = 65536 if page_size == 1 else page_size
    usable = page_size - data[20]
    if page_size < 512 or usable < 480:
        return found
    free = _freelist(data, page_size)
    for number in range(1, len(data) // page_size + 1):
        if number in free:
            continue
        offset = (number - 1) * page_size
        header = offset + (100 if number == 1 else 0)
        if data[header] != _LEAF_TABLE:
            continue
        try:
            rows = _leaf_rows(data, offset, header, page_size, usable)
        except (IndexError, ValueError, struct.error, UnicodeDecodeError):
            continue  # a damaged leaf: its rows are what is lost
        table = _owner(rows, tables)
        if table is not None:
            found[table].extend(rows)
    return found


def _owner(rows: list[Row], tables: Mapping[str, Sequence[Column]]) -> str | None:
    if not rows:
        return None
    fits = [
        name
        for name, columns in tables.items()
        if all(
            len(values) <= len(columns)
            and all(c.fits(v) for c, v in zip(columns, values, strict=False))
            for _, values in rows
        )
    ]
    return fits[0] if len(fits) == 1 else None


def _freelist(data: bytes, page_size: int) -> set[int]:
    pages: set[int] = set()
    trunk = struct.unpack_from(">I", data, 32)[0]
    while trunk and trunk not in pages and trunk * page_size <= len(data):
        pages.add(trunk)
        at = (trunk - 1) * page_size
        nxt, count = struct.unpack_from(">II", data, at)
        count = min(count, (page_size - 8) // 4)
        pages.update(struct.unpack_from(f">{count}I", data, at + 8))
        trunk = nxt
    return pages


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        byte = data[at + i]
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, at + i + 1
    return (value << 8) | data[at + 8], at + 9


def _leaf_rows(data: bytes, offset: int, header: int, page_size: int, usable: int) -> list[Row]:
    count = struct.unpack_from(">H", data, header + 3)[0]
    end = offset + page_size
    rows: list[Row] = []
    for i in range(count):
        cell = offset + struct.unpack_from(">H", data, header + 8 + 2 * i)[0]
        if not header + 8 <= cell < end:
            raise ValueError("cell pointer outside its page")
        size, at = _varint(data, cell)
        rowid, at = _varint(data, at)
        if rowid >= 1 << 63:
            rowid -= 1 << 64
        payload = _payload(data, at, size, page_size, usable)
        rows.append((rowid, _record(payload)))
    return rows


def _payload(data: bytes, at: int, size: int, page_size: int, usable: int) -> bytes:
    most = usable - 35
    if size <= most:
        return data[at : at + size]
    least = (usable - 12) * 32 // 255 - 23
    local = least + (size - least) % (usable - 4)
    if local > most:
        local = least
    parts = [data[at : at + local]]
    left = size - local
    page = struct.unpack_from(">I", data, at + local)[0]
    for _ in range(_MAX_OVERFLOW_PAGES):
        if left <= 0:
            break
        if not 1 <= page <= len(data) // page_size:
            raise ValueError("overflow page outside the file")
        start = (page - 1) * page_size
        chunk = min(left, usable - 4)
        parts.append(data[start + 4 : start + 4 + chunk])
        left -= chunk
        page = struct.unpack_from(">I", data, start)[0]
    if left > 0:
        raise ValueError("overflow chain too long")
    return b"".join(parts)


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _record(payload: bytes) -> tuple[object, ...]:
    header_size, at = _varint(payload, 0)
    if not 1 <= header_size <= len(payload):
        raise ValueError("record header outside its payload")
    types: list[int] = []
    while at < header_size:
        kind, at = _varint(payload, at)
        types.append(kind)
    values: list[object] = []
    body = header_size
    for kind in types:
        if kind == 0:
            values.append(None)
        elif kind in _INT_SIZES:
            n = _INT_SIZES[kind]
            values.append(int.from_bytes(payload[body : body + n], "big", signed=True))
            body += n
        elif kind == 7:
            values.append(struct.unpack_from(">d", payload, body)[0])
            body += 8
        elif kind in (8, 9):
            values.append(kind - 8)
        elif kind >= 12:
            n = (kind - 12) // 2
            raw = payload[body : body + n]
            values.append(raw.decode("utf-8") if kind % 2 else bytes(raw))
            body += n
        else:
            raise ValueError(f"reserved serial type {kind}")
        if body > len(payload):
            raise ValueError("record longer than its payload")
    return tuple(values)
