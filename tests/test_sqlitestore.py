"""The shared SQLite store base: schema versions, migrations, the transaction helper, damage."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.storage.sqlitestore import Schema, SqliteStore, SyncMode, transaction

_V1 = "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);"
_V2 = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY, text TEXT NOT NULL, tag TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS notes_tag ON notes (tag);
"""


def _add_tag(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE notes ADD COLUMN tag TEXT NOT NULL DEFAULT 'old'")


class Notes(SqliteStore):
    schema = Schema("note store", 2, _V2, {2: _add_tag})


class NotesV1(SqliteStore):
    schema = Schema("note store", 1, _V1)


def test_a_fresh_file_gets_the_current_schema_without_migrating(tmp_path: Path) -> None:
    store = Notes(tmp_path / "notes.db")
    store.open()
    with store.transaction() as c:
        c.execute("INSERT INTO notes (text) VALUES ('new')")
    assert store.conn.execute("SELECT tag FROM notes").fetchall() == [("",)]
    assert store.conn.execute("PRAGMA user_version").fetchone() == (2,)
    assert store.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()
    store.close()  # idempotent


def test_an_older_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    old = NotesV1(tmp_path / "notes.db")
    old.open()
    with old.transaction() as c:
        c.execute("INSERT INTO notes (text) VALUES ('kept')")
    old.close()
    store = Notes(tmp_path / "notes.db")
    store.open(create=False)
    assert store.conn.execute("SELECT text, tag FROM notes").fetchall() == [("kept", "old")]
    assert store.conn.execute("PRAGMA user_version").fetchone() == (2,)
    store.close()


def _old_release_file(path: Path, rows: int) -> None:
    """A store file as releases before issue 16 made it: 4 KiB pages, WAL."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(_V2 + "PRAGMA user_version = 2;")
    conn.executemany("INSERT INTO notes (text) VALUES (?)", [(f"note {i}",) for i in range(rows)])
    conn.commit()
    conn.close()


def _page_size(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:18], "big")


def test_files_get_small_pages_and_a_small_older_file_is_rebuilt_with_its_rows(
    tmp_path: Path,
) -> None:
    # Fewer bytes per synced commit on the card (issue 16): new files have 1 KiB pages,
    # and an older file small enough to rebuild at the start gets them too.
    fresh = Notes(tmp_path / "fresh.db")
    fresh.open()
    with fresh.transaction() as c:
        c.execute("INSERT INTO notes (text) VALUES ('new')")
    fresh.close()
    assert _page_size(tmp_path / "fresh.db") == 1024
    _old_release_file(tmp_path / "old.db", 500)
    assert _page_size(tmp_path / "old.db") == 4096
    store = Notes(tmp_path / "old.db")
    store.open(create=False)
    assert store.conn.execute("SELECT count(*), max(id) FROM notes").fetchone() == (500, 500)
    assert store.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    store.close()
    assert _page_size(tmp_path / "old.db") == 1024


def test_an_older_file_in_use_elsewhere_keeps_its_pages_and_opens_at_once(
    tmp_path: Path,
) -> None:
    # Another process holds the file (a `gateway outbox` reading it): no rebuild, and
    # no wait for it either; the store works on the old pages.
    path = tmp_path / "old.db"
    _old_release_file(path, 10)
    other = sqlite3.connect(path)
    other.execute("BEGIN")
    other.execute("SELECT count(*) FROM notes").fetchone()
    try:
        store = Notes(path)
        started = time.monotonic()
        store.open(create=False)
        assert time.monotonic() - started < 4.0  # waiting for the lock takes 5 s
        with store.transaction() as c:
            c.execute("INSERT INTO notes (text) VALUES ('more')")
        assert store.conn.execute("SELECT count(*) FROM notes").fetchone() == (11,)
        store.close()
    finally:
        other.close()
    assert _page_size(path) == 4096


def test_a_file_of_a_newer_gateway_is_refused_and_left_alone(tmp_path: Path) -> None:
    Notes(tmp_path / "notes.db").open()
    older = NotesV1(tmp_path / "notes.db")
    with pytest.raises(RuntimeError, match=r"note store schema version 2 is newer .*\(1\)"):
        older.open()
    assert not older.is_open
    assert not list(tmp_path.glob("notes.db.damaged-*")), "not mistaken for damage"


def test_open_without_create_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no note store at .*missing\.db"):
        Notes(tmp_path / "missing.db").open(create=False)
    with pytest.raises(RuntimeError, match=r"note store .* is not open"):
        _ = Notes(tmp_path / "missing.db").conn


def test_a_failed_transaction_leaves_nothing_and_no_open_transaction(tmp_path: Path) -> None:
    store = Notes(tmp_path / "notes.db")
    store.open()
    with pytest.raises(ValueError, match="boom"), store.transaction() as c:
        c.execute("INSERT INTO notes (text) VALUES ('lost')")
        raise ValueError("boom")
    assert not store.conn.in_transaction
    assert store.conn.execute("SELECT count(*) FROM notes").fetchone() == (0,)
    store.close()


def test_a_commit_that_fails_is_rolled_back_too(tmp_path: Path) -> None:
    # A deferred foreign key is checked at COMMIT: SQLite refuses the COMMIT and keeps
    # the transaction open, as it does for a COMMIT a full disk refuses.
    conn = sqlite3.connect(tmp_path / "fk.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER"
        " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(sqlite3.IntegrityError), transaction(conn):
        conn.execute("INSERT INTO child (parent) VALUES (42)")
    assert not conn.in_transaction
    with transaction(conn):  # the connection is usable again at once
        conn.execute("INSERT INTO parent (id) VALUES (1)")
    assert conn.execute("SELECT count(*) FROM child").fetchone() == (0,)
    conn.close()


def test_a_damaged_file_is_moved_aside_and_what_can_be_read_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    store = Notes(path, sync=SyncMode.NORMAL)
    store.open()
    with store.transaction() as c:
        c.executemany("INSERT INTO notes (text) VALUES (?)", [("x" * 3000,)] * 40)
    store.close()
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")  # the header's page size
    data[page * 3 : page * 3 + 64] = b"\xff" * 64  # a leaf page of the table
    path.write_bytes(bytes(data))
    store.open()
    assert store.salvage is not None and store.salvage.rows_copied >= 30
    assert list(tmp_path.glob("notes.db.damaged-*"))
    (n,) = store.conn.execute("SELECT count(*) FROM notes").fetchone()
    assert n == store.salvage.rows_copied
    store.close()


def test_writes_run_in_order_off_the_calling_thread_and_close_finishes_them(
    tmp_path: Path,
) -> None:
    store = Notes(tmp_path / "notes.db")
    store.open()
    with pytest.raises(RuntimeError, match="no writer running"):
        store.write(lambda c: None)
    store.start_writer()
    threads: set[int] = set()

    def add(text: str) -> Callable[[sqlite3.Connection], int]:
        def write(c: sqlite3.Connection) -> int:
            threads.add(threading.get_ident())
            with transaction(c):
                cur = c.execute("INSERT INTO notes (text) VALUES (?)", (text,))
            assert cur.lastrowid is not None
            return cur.lastrowid

        return write

    futures = [store.write(add(str(n))) for n in range(50)]
    failed = store.write(lambda c: c.execute("INSERT INTO nowhere VALUES (1)"))
    last = store.write(add("after the error"))
    store.close()  # waits for what was queued
    assert [f.result() for f in futures] == list(range(1, 51))
    assert isinstance(failed.exception(), sqlite3.OperationalError), "the error goes to its caller"
    assert last.result() == 51, "and the writer goes on"
    assert threads and threading.get_ident() not in threads
    store.open()
    assert store.conn.execute("SELECT count(*) FROM notes").fetchone() == (51,)
    store.close()
