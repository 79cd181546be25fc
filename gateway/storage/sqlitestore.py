"""The shared base of the gateway's SQLite stores: open checked, WAL, versioned schema, one transaction.

Every store of the gateway (the outbox, the alarm database, the kiosk's requests, the
SMS record) opens its file the same way:

- checked first, and a damaged file moved aside and salvaged (`gateway.storage.dbrecovery`);
- WAL mode, `synchronous` chosen per store (`SyncMode`), a busy timeout, a WAL size limit;
- its schema made or migrated by a `Schema` (`PRAGMA user_version`), all in one
  transaction, and a file written by a newer gateway refused;
- every write in `transaction(conn)`: BEGIN IMMEDIATE ... COMMIT, rolled back on any
  error, also when the COMMIT itself fails (a full disk leaves the transaction open);
- for a store used from the event loop, `start_writer()`: its writes run in order in a
  thread of their own, on a second connection (`write` returns a future), so a commit
  with `synchronous=FULL` (milliseconds on a VM disk, more on an SD card, seconds while
  another process holds the lock) never blocks the loop.  Reads stay on `conn`: in WAL
  mode they do not wait for the writer.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from gateway.storage.dbrecovery import Salvage, open_checked

__all__ = ["Schema", "SqliteStore", "SyncMode", "connect", "rollback", "transaction"]

log = logging.getLogger(__name__)

T = TypeVar("T")

PAGE_SIZE = 1024  # bytes per SQLite page of every store: see _small_pages
REBUILD_MAX_BYTES = 16 * 1024 * 1024  # an older file this small is rebuilt at the start
BUSY_MS = 5000  # how long a statement waits for another connection's lock


class SyncMode(StrEnum):
    """`full` survives power loss; `normal` survives a crash of the process only."""

    FULL = "full"
    NORMAL = "normal"


def connect(path: Path, *, sync: SyncMode | None) -> sqlite3.Connection:
    """Open a store's file; `sync` set means a write connection, None a read-only one.

    Autocommit mode (isolation_level=None): every transaction is an explicit BEGIN, so
    nothing is committed behind a writer's back.  check_same_thread is off because a
    connection is handed from the thread that opens it to the one that uses it; each is
    still used by one thread at a time.
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        if sync is None:
            conn.execute("PRAGMA query_only = ON")
            return conn
        _small_pages(conn, path)
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot use WAL mode (got {mode!r})")
        # FULL fsyncs the WAL at every commit (survives power loss); NORMAL only at
        # checkpoints (survives a crash of the process, not of the machine).
        conn.execute(f"PRAGMA synchronous = {'FULL' if sync is SyncMode.FULL else 'NORMAL'}")
        # After a checkpoint, shrink a WAL that grew during a backlog: SD cards are small.
        conn.execute("PRAGMA journal_size_limit = 8388608")
    except BaseException:
        conn.close()
        raise
    return conn


def _small_pages(conn: sqlite3.Connection, path: Path) -> None:
    """Give a new file PAGE_SIZE pages; rebuild a small one that has others (best effort).

    A synced commit writes one WAL frame per SQLite page it touched (a table leaf, an
    index leaf, a counter), and the card is asked to write every 4 KiB file page those
    frames fall in: with 4 KiB pages an event's commit costs about 16 KiB, with 1 KiB
    pages about 7 (docs/benchmarks.md, issue 16).  A file made by an older release
    keeps its pages unless it is small enough to rebuild in a moment at the start
    (VACUUM, which needs the file to itself: another connection, a full disk or a
    read-only folder leave it as it is, and it works as before).
    """
    if conn.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE:
        return
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # taken when the file is made
        return
    try:
        if path.stat().st_size > REBUILD_MAX_BYTES:
            return
        conn.execute("PRAGMA busy_timeout = 0")
        conn.execute("PRAGMA journal_mode = DELETE")  # a page size changes only outside WAL
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        conn.execute("VACUUM")
        log.info("%s: rebuilt with %d-byte pages (fewer bytes written per commit)", path, PAGE_SIZE)
    except (OSError, sqlite3.Error) as exc:
        log.info("%s: keeps its page size for now (%s)", path, exc)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_MS}")


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back the open transaction, if any; never raises."""
    # After some I/O errors SQLite has already rolled back; ROLLBACK would then fail.
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.exception("rollback failed")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT; on any error (the COMMIT's too) rolled back and raised."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        rollback(conn)
        raise


@dataclass(frozen=True)
class Schema:
    """A store's tables at `version`, and the steps that bring an older file there.

    `script` holds CREATE ... IF NOT EXISTS statements: the current tables, run on
    every open.  `migrations[v]` takes an existing file from version v-1 to v; it is
    not run on a fresh file, which `script` makes at the current version directly.
    Files of stores that were never versioned have version 0.
    """

    name: str  # for messages: "outbox", "alarm database"
    version: int
    script: str
    migrations: Mapping[int, Callable[[sqlite3.Connection], None]] = field(default_factory=dict)

    def apply(self, conn: sqlite3.Connection) -> None:
        """Make or migrate the tables, as one transaction; refuse a newer file."""
        found = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if found > self.version:
            raise RuntimeError(
                f"{self.name} schema version {found} is newer than this gateway's ({self.version})"
            )
        with transaction(conn):
            fresh = not conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ).fetchone()
            if not fresh:
                for version in range(found + 1, self.version + 1):
                    step = self.migrations.get(version)
                    if step is not None:
                        step(conn)
            # executescript() would commit the open transaction: one statement at a time.
            for statement in _statements(self.script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(self.version)}")


def _statements(script: str) -> Iterator[str]:
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement at the end of a schema: {pending.strip()!r}")


class SqliteStore:
    """One store file of the gateway and its connection; subclasses set `schema`.

    Constructor only assigns.  `open()` checks the file (a damaged one is rebuilt and
    `salvage` says what was saved, for the store to report), makes or migrates the
    schema and calls `opened()`; `transaction()` runs one write; `close()` is idempotent.
    """

    schema: Schema

    def __init__(self, path: Path, *, sync: SyncMode = SyncMode.FULL) -> None:
        self.path = path
        self.sync = sync
        self.salvage: Salvage | None = None
        self._conn: sqlite3.Connection | None = None
        self._writer: _Writer | None = None

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection; RuntimeError when the store is not open."""
        if self._conn is None:
            raise RuntimeError(f"{self.schema.name} {self.path} is not open")
        return self._conn

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def open(self, *, create: bool = True) -> None:
        """Open (with `create`, make) the file, checked and at the current schema."""
        if not create and not self.path.exists():
            raise FileNotFoundError(f"no {self.schema.name} at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn, self.salvage = open_checked(self.path, self.connect, self.schema.apply)
        self._conn = conn
        try:
            self.opened(conn)
        except BaseException:
            # Not close(): a subclass may hold a lock around it while opening.
            self._conn = None
            conn.close()
            raise

    def connect(self, path: Path) -> sqlite3.Connection:
        """A write connection with this store's pragmas (also for a rebuilt file)."""
        return connect(path, sync=self.sync)

    def opened(self, conn: sqlite3.Connection) -> None:
        """Read what the store keeps in memory (counters, tokens); nothing by default."""

    def transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """One write transaction on the store's connection (see `transaction`)."""
        return transaction(self.conn)

    def start_writer(self) -> None:
        """From now on `write` runs writes in order in a thread of its own (open first)."""
        if self._writer is None:
            self._writer = _Writer(self.connect(self.path), f"{self.path.stem}-writer")

    def write(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        """Run `fn(conn)` in the writer thread after every write queued before it.

        The future carries what `fn` returned or raised; `fn` opens its own transaction.
        """
        if self._writer is None:
            raise RuntimeError(f"{self.schema.name} {self.path} has no writer running")
        return self._writer.submit(fn)

    def close(self) -> None:
        """Run the writes still queued, stop the writer, close the connections."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class _Writer:
    """One thread, one connection, the writes queued to it run in order."""

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple[Callable[[Any], Any], Any] | None]
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "is it closed?" with queueing
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> concurrent.futures.Future[T]:
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the store's writer is closed")
            self._queue.put((fn, fut))
        return fut

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(self._conn)
            except BaseException as exc:  # the caller decides; the thread goes on
                fut.set_exception(exc)
            else:
                fut.set_result(result)
        self._conn.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._thread.join()
