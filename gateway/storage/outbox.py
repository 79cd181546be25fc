"""The durable outbox between drivers and the uplinks: SQLite in WAL mode, group commit.

Drivers `put` messages; the future resolves with the message's `seq` once the row is
committed (fsync'ed at every commit with `SyncMode.FULL`, at checkpoints with `NORMAL`).
Uplinks (the MQTT publisher, an InfluxDB sink) each read with their own `OutboxReader`
and `ack` what they delivered; a row is deleted when every consumer that accepted it
has acknowledged it.  Delivery is at-least-once: what was not acknowledged is read
again after a restart.

One writer thread owns the write connection.  It waits for the first queued request,
takes everything queued behind it, and commits the lot as one transaction.  A batch of
telemetry only lingers up to `commit_interval_ms` to gather more (fewer writes to the
SD card); an event, or a `meta_increment`, commits at once (alarm latency).

`seq` is per gateway and strictly increasing: the next value is stored in the same
transaction as the rows, so it survives restarts and kill -9 and is never reused.  A
message no configured consumer accepts is not stored and gets no seq: its future
resolves with -1.  A message whose `build_payload` raises fails alone and consumes no
seq.

The store is bounded by `max_messages`: the oldest telemetry is dropped first and
counted (`dropped_telemetry`, persisted); events are never dropped, even if events
alone exceed the bound.

Telemetry is handed off with `offer`, which does not wait for the commit, so one
device never waits on the linger another device's reading started.  The hand-off is
bounded by `max_queued`: a reading offered while that many wait for the writer is shed,
and so is telemetry of a batch that cannot be committed.  Shed telemetry still takes a
seq (the writer skips one number per shed reading) and counts in `dropped_telemetry`,
so the platform sees the gap and the count, as for the bound.

`lowest_seq[consumer]` is the lowest seq still waiting for that consumer (or the next
seq to be handed out, when nothing waits): a seq below it that the consumer never
delivered is lost.  It is refreshed at most every `_LOWEST_EVERY_S` and only grows, so
a stale value is a safe (low) bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.sdk.model import Priority
from gateway.storage import dbrecovery
from gateway.storage import outbox_sql as sql
from gateway.storage.diskspace import Room, no_room
from gateway.storage.outbox_memory import Unstored
from gateway.storage.outbox_sql import SyncMode

__all__ = [
    "Consumer",
    "Outbox",
    "OutboxError",
    "OutboxItem",
    "OutboxReader",
    "OutboxStats",
    "Row",
]

log = logging.getLogger(__name__)

MAX_BATCH = 2000  # requests per transaction: bounds the time a commit holds the writer
# Telemetry waiting for the writer: at 640 readings/s (32 meters every 50 ms) this is
# over 15 s of a stalled disk, and at about 1 KiB a message a bounded 10 MB.
MAX_QUEUED = 10_000
# Kept free for events (see gateway.storage.diskspace): about 8,000 events of 500 bytes.
RESERVE_BYTES = 4 * 1024 * 1024
_WARN_EVERY_S = 60.0
_LOWEST_EVERY_S = 0.5
_FULL_HOLD_S = 10.0  # shortest time telemetry is shed once the disk was found full


class OutboxError(Exception):
    """A batch could not be committed (disk full, I/O error); its `__cause__` says why."""


@dataclass(frozen=True)
class OutboxItem:
    """A message to store; `build_payload(seq)` runs in the writer thread once seq is known."""

    priority: Priority
    channel: str
    device_kind: str
    topic: str
    build_payload: Callable[[int], bytes]
    # Published with the MQTT retain flag: the broker keeps the last one for new
    # subscribers (alarm states).  An empty payload then clears the retained message.
    retain: bool = False
    # False for a message that carries no `seq` (an alarm state document): it takes no
    # number (its row and future get 0), so a gap in the seq of telemetry and events
    # keeps meaning dropped telemetry, as docs/mqtt-api.md promises.
    sequenced: bool = True


def _accept_all(item: OutboxItem) -> bool:
    return True


@dataclass(frozen=True)
class Consumer:
    """An uplink that takes messages from the outbox; `accepts` picks the ones it wants."""

    name: str
    accepts: Callable[[OutboxItem], bool] = _accept_all


@dataclass(frozen=True)
class Row:
    """A stored message as a consumer reads it."""

    id: int
    seq: int
    priority: Priority
    topic: str
    payload: bytes
    created: float
    retain: bool = False


@dataclass(frozen=True)
class OutboxStats:
    """Health figures; the rates are averages since `open()`.

    `disk_write_bytes_per_hour` is what the whole process made the kernel write to
    storage (/proc/self/io), None where the kernel does not tell.
    """

    depth: int
    depth_events: int
    depth_telemetry: int
    oldest_age_s: float | None
    dropped_telemetry: int
    accepted_total: int
    commits_total: int
    bytes_written_per_hour: float
    disk_write_bytes_per_hour: float | None
    queued: int = 0  # telemetry handed off and not yet committed
    lowest_seq: Mapping[str, int] = field(default_factory=dict)  # consumer -> lowest seq waiting
    free_bytes: int | None = None  # on the outbox's file system, outside the reserve
    reserve_bytes: int = 0  # held for events right now (0: released or disabled)
    unstored_events: int = 0  # events the disk refused, published from memory
    lost_events: int = 0  # events refused while memory was full too (should stay 0)


@dataclass(slots=True)
class _Put:
    item: OutboxItem
    future: concurrent.futures.Future[int]
    created: float
    # For aput: the asyncio future to settle, resolved for a whole batch with one
    # call_soon_threadsafe per loop instead of one wake-up of the loop per message.
    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[int]] | None = None
    # Handed off by `offer`: nobody waits for it, and it counts against `max_queued`.
    offered: bool = False


@dataclass(slots=True)
class _Ack:
    mask: int
    ids: tuple[int, ...]


@dataclass(slots=True)
class _Increment:
    key: str
    future: concurrent.futures.Future[int] = field(default_factory=concurrent.futures.Future)


@dataclass(slots=True)
class _Recover:
    reason: str
    generation: int  # the file the reader found damaged; already rebuilt if older


_Request = _Put | _Ack | _Increment | _Recover
_STOP = None  # queued by close(): everything queued before it is still committed


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Counters the writer publishes after each commit; replaced whole, read lock-free."""

    depth: Mapping[Priority, int]
    oldest_created: float | None = None
    dropped_telemetry: int = 0
    accepted: int = 0
    commits: int = 0
    bytes_written: int = 0
    lowest_seq: Mapping[str, int] = field(default_factory=dict)


def _read_write_bytes() -> int | None:
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


class Outbox:
    """The gateway's durable message store; see the module docstring for the semantics.

    put/aput/ack/stats/meta_increment are safe from any thread.  One Outbox is opened
    once and closed once.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_messages: int,
        commit_interval_ms: int,
        sync: SyncMode,
        consumers: Sequence[Consumer],
        max_queued: int = MAX_QUEUED,
        on_storage_fault: Callable[[Mapping[str, Any]], OutboxItem] | None = None,
        reserve_bytes: int = RESERVE_BYTES,
    ) -> None:
        names = [c.name for c in consumers]
        if not consumers or len(set(names)) != len(names):
            raise ValueError(f"outbox consumers need distinct names, at least one: {names}")
        if len(names) > sql.MAX_CONSUMERS:
            raise ValueError(f"at most {sql.MAX_CONSUMERS} outbox consumers")
        if max_messages < 1 or commit_interval_ms < 0 or max_queued < 1:
            raise ValueError("max_messages and max_queued must be >= 1 and commit_interval_ms >= 0")
        self.path = path
        self.max_messages = max_messages
        self.commit_interval_ms = commit_interval_ms
        self.sync = sync
        self.consumers = tuple(consumers)
        self.max_queued = max_queued
        # Builds the `gateway.storage` event (runtime: it knows the envelope) that the
        # outbox stores about its own faults: a rebuilt file, a full disk.
        self.on_storage_fault = on_storage_fault
        self._reports: list[dict[str, Any]] = []  # found at open, queued once running
        self._generation = 0  # +1 per rebuild: readers reopen the new file
        self._room = Room(path, reserve_bytes)
        self._memory = Unstored()
        self._full = False  # shedding telemetry for lack of room (writer thread)
        self._full_since = 0.0
        self._dropped_owed = 0  # dropped while nothing could be written (writer thread)
        self._batch_dropped = 0
        self._masks: dict[str, int] = {}
        self._queue: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders "is it open?" with enqueueing
        self._state = "new"  # new -> open -> closed
        self._thread: threading.Thread | None = None
        self._listeners: tuple[Callable[[], None], ...] = ()
        self._snap = _Snapshot(depth={p: 0 for p in Priority})
        self._opened_at = 0.0
        self._io_at_open: int | None = None
        # Under _lock: offered telemetry not yet taken by the writer, and telemetry shed
        # since the writer last accounted for it (it still owes those a seq each).
        self._queued = 0
        self._shed = 0
        # Writer-thread state, set by open().
        self._conn: sqlite3.Connection
        self._next_seq = 0
        self._retry_acks: list[_Ack] = []
        self._warned_drop = self._warned_events = self._warned_room = -math.inf
        self._lowest_stale = False
        self._lowest_at = -math.inf

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        """Create the file and schema, release removed consumers, start the writer thread."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"outbox {self.path} was already opened")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn, state = self._open_file()
            self._conn = conn
            if not self._room.make_reserve():
                log.warning(
                    "outbox: no room for the %d-byte reserve next to %s; telemetry is shed"
                    " until there is",
                    self._room.reserve_bytes,
                    self.path,
                )
            self._next_seq = state.next_seq
            self._snap = _Snapshot(
                depth=state.depth,
                oldest_created=state.oldest_created,
                dropped_telemetry=state.dropped_telemetry,
                lowest_seq=sql.lowest_pending(conn, self._masks, state.next_seq),
            )
            self._lowest_at = time.monotonic()
            self._opened_at = time.monotonic()
            self._io_at_open = _read_write_bytes()
            self._thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
            self._thread.start()
            self._state = "open"
            for report in self._reports:
                self._report(report)
            self._reports = []
        log.info(
            "outbox %s open: %d messages stored, next seq %d",
            self.path,
            sum(state.depth.values()),
            state.next_seq,
        )

    def _open_file(self) -> tuple[sqlite3.Connection, sql.StoredState]:
        """Open the file, checked first; a damaged one is rebuilt from what can be read."""
        conn, salvage = dbrecovery.open_checked(
            self.path, lambda p: sql.connect(p, sync=self.sync), sql.init_schema
        )
        try:
            if salvage is not None:
                self._reports.append(self._after_rebuild(conn, salvage, None))
            self._masks = sql.reconcile_consumers(conn, [c.name for c in self.consumers])
            return conn, sql.load_state(conn)
        except BaseException:
            conn.close()
            raise

    def _rebuild(self, reason: str, next_seq: int) -> dict[str, Any]:
        """Move the file that went bad under the writer aside and salvage its rows."""
        salvage = dbrecovery.rebuild(
            self.path, sql.init_schema, reason, connect=lambda p: sql.connect(p, sync=self.sync)
        )
        conn = sql.connect(self.path, sync=self.sync)
        try:
            return self._after_rebuild(conn, salvage, next_seq)
        finally:
            conn.close()

    def _after_rebuild(
        self, conn: sqlite3.Connection, salvage: dbrecovery.Salvage, next_seq: int | None
    ) -> dict[str, Any]:
        """Set the seq counter safely and say which seqs were lost: the `gateway.storage` data.

        `next_seq` is the writer's own counter when the damage shows at run time; at
        open it comes from the file, and if that is unreadable too it is put well
        above every salvaged seq, so that no number is ever given twice.
        """
        lost = sql.repair_after_salvage(
            conn, salvage.lost.get("messages", []), "meta" in salvage.lost, next_seq
        )
        self._generation += 1
        log.error(
            "outbox rebuilt after damage: %d rows salvaged, seq ranges lost: %s",
            salvage.rows_copied,
            lost or "none",
        )
        return {"store": "outbox", **salvage.as_dict(), "lost_seq": lost}

    def _report(self, data: Mapping[str, Any]) -> None:
        """Queue a `gateway.storage` event about the outbox itself (if a builder is set)."""
        if self.on_storage_fault is None:
            return
        try:
            self._queue.put(
                _Put(self.on_storage_fault(data), concurrent.futures.Future(), time.time())
            )
        except Exception:
            log.exception("outbox: the gateway.storage event could not be built: %s", data)

    def report_storage_fault(self, data: Mapping[str, Any]) -> None:
        """Store a `gateway.storage` event for another store (alarms, requests)."""
        with self._lock:
            if self._state == "open":
                self._report(data)

    def report_damage(self, reason: str) -> None:
        """A reader found the file damaged: have the writer rebuild it (once per file)."""
        with self._lock:
            if self._state == "open":
                self._queue.put(_Recover(reason, self._generation))

    def close(self) -> None:
        """Commit everything queued, stop the writer, checkpoint the WAL.  Idempotent."""
        with self._lock:
            if self._state != "open":
                self._state = "closed"
                return
            self._state = "closed"
            self._queue.put(_STOP)
        assert self._thread is not None
        self._thread.join()

    # -- producers ----------------------------------------------------------------

    def put(self, item: OutboxItem) -> concurrent.futures.Future[int]:
        """Queue a message; the future resolves with its seq once committed (-1: not stored)."""
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._enqueue(_Put(item, fut, time.time()))
        return fut

    def offer(self, item: OutboxItem) -> bool:
        """Hand telemetry to the writer without waiting for its commit.

        False: `max_queued` readings already wait, so this one is shed (it takes a seq
        and counts as dropped telemetry).  What was offered before `close()` is
        committed by it.
        """
        with self._lock:
            if self._state != "open":
                raise RuntimeError(f"outbox {self.path} is not open ({self._state})")
            if self._queued >= self.max_queued:
                self._shed += 1
                return False
            self._queued += 1
            self._queue.put(_Put(item, concurrent.futures.Future(), time.time(), offered=True))
        return True

    async def aput(self, item: OutboxItem) -> int:
        """`put` for asyncio code: returns the seq once the message is committed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._enqueue(_Put(item, concurrent.futures.Future(), time.time(), (loop, waiter)))
        return await waiter

    def meta_increment(self, key: str) -> int:
        """Add one to a durable counter (e.g. the MQTT session) and return it once committed."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("meta_increment would wait for itself in the writer thread")
        request = _Increment(key)
        self._enqueue(request)
        return request.future.result()

    def _enqueue(self, request: _Request) -> None:
        with self._lock:
            if self._state != "open":
                raise RuntimeError(f"outbox {self.path} is not open ({self._state})")
            self._queue.put(request)

    # -- consumers ----------------------------------------------------------------

    def reader(self) -> OutboxReader:
        """A read connection for one thread at a time; WAL readers do not block the writer."""
        if self._state != "open":
            raise RuntimeError(f"outbox {self.path} is not open ({self._state})")
        return OutboxReader(self, dict(self._masks))

    def _read_connection(self) -> tuple[int, sqlite3.Connection]:
        # Generation first: a rebuild in between makes the reader reopen once more.
        generation = self._generation
        return generation, sql.connect(self.path, sync=None)

    def ack(self, consumer: str, ids: Iterable[int]) -> None:
        """Mark rows delivered by `consumer`; applied with the next commit."""
        mask = self._masks[consumer]
        ids = tuple(ids)
        held = [i for i in ids if i < 0]  # events the disk refused, held in memory
        if held:
            self._memory.ack(mask, held)
            ids = tuple(i for i in ids if i >= 0)
        if ids:
            self._enqueue(_Ack(mask, ids))

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call `fn()` in the writer thread after each commit that stored rows; keep it short."""
        with self._lock:
            self._listeners = (*self._listeners, fn)

    def stats(self) -> OutboxStats:
        """Current figures, from counters the writer keeps; no database access."""
        snap = self._snap
        hours = max(time.monotonic() - self._opened_at, 1.0) / 3600
        disk: float | None = None
        now_io = _read_write_bytes()
        if self._state != "new" and self._io_at_open is not None and now_io is not None:
            disk = (now_io - self._io_at_open) / hours
        return OutboxStats(
            depth=sum(snap.depth.values()),
            depth_events=snap.depth[Priority.EVENT],
            depth_telemetry=snap.depth[Priority.TELEMETRY],
            oldest_age_s=None
            if snap.oldest_created is None
            else max(0.0, time.time() - snap.oldest_created),
            dropped_telemetry=snap.dropped_telemetry,
            accepted_total=snap.accepted,
            commits_total=snap.commits,
            bytes_written_per_hour=snap.bytes_written / hours if self._state != "new" else 0.0,
            disk_write_bytes_per_hour=disk,
            queued=self._queued,
            lowest_seq=self._lowest_with_memory(snap.lowest_seq),
            free_bytes=self._room.free_bytes(),
            reserve_bytes=self._room.reserve_bytes if self._room.reserved else 0,
            unstored_events=self._memory.count(),
            lost_events=self._memory.lost,
        )

    def _lowest_with_memory(self, lowest: Mapping[str, int]) -> dict[str, int]:
        held = {
            name: min(
                (row.seq for _, row in self._memory.pending(mask, set()) if row.seq), default=None
            )
            for name, mask in self._masks.items()
        }
        return {name: min(value, held[name] or value) for name, value in lowest.items()}

    # -- writer thread --------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch, stopping = self._collect()
            try:
                self._commit(batch)
            except BaseException as exc:  # a bug here must not leave callers waiting forever
                log.exception("outbox writer failed on a batch of %d requests", len(batch))
                _fail(batch, exc)
        self._store_held_events()
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.exception("outbox checkpoint at close failed")
        self._conn.close()
        if self._retry_acks:
            log.warning("outbox closed with acknowledgements not stored: rows will be resent")

    def _store_held_events(self) -> None:
        """At close: events still held in memory go to disk if they fit now, else are lost."""
        rows = self._memory.take_all()
        if not rows:
            return
        self._room.release()  # the reserve is for exactly this
        try:
            self._batch_dropped = 0
            self._write([_Staged(None, r, False) for r in rows], self._next_seq, [], [])
        except sqlite3.Error as exc:
            log.error(
                "outbox closed with %d undelivered events it could not store: %s", len(rows), exc
            )

    def _collect(self) -> tuple[list[_Request], bool]:
        """Wait for a request, then gather what follows it; returns (batch, stop seen)."""
        first = self._next_request()
        if first is _STOP:
            return [], True
        batch = [first]
        urgent = _urgent(first)
        deadline = time.monotonic() + self.commit_interval_ms / 1000
        while len(batch) < MAX_BATCH:
            remaining = 0.0 if urgent else deadline - time.monotonic()
            try:
                if remaining > 0:
                    request = self._queue.get(timeout=remaining)
                else:
                    request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is _STOP:
                return batch, True
            batch.append(request)
            urgent = urgent or _urgent(request)
        return batch, False

    def _next_request(self) -> _Request | None:
        """Block for the next request; while `lowest_seq` is stale, refresh it when idle."""
        while self._lowest_stale:
            wait = self._lowest_at + _LOWEST_EVERY_S - time.monotonic()
            try:
                return self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
            except queue.Empty:
                self._refresh_lowest()
        return self._queue.get()

    def _refresh_lowest(self) -> None:
        self._lowest_stale = False
        self._lowest_at = time.monotonic()
        try:
            lowest = sql.lowest_pending(self._conn, self._masks, self._next_seq)
        except sqlite3.Error as exc:
            log.warning("outbox: cannot read the lowest waiting seq: %s", exc)
            return
        self._snap = replace(self._snap, lowest_seq=lowest)

    def _commit(self, batch: list[_Request]) -> None:
        try:
            self._commit_batch(batch)
        finally:
            _settle_waiters(batch)
        self._lowest_stale = True
        if time.monotonic() - self._lowest_at >= _LOWEST_EVERY_S:
            self._refresh_lowest()

    def _recover(self, reason: str) -> None:
        """Rebuild the damaged file under the writer and carry on with the new one."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        try:
            report = self._rebuild(reason, self._next_seq)
        except (OSError, sqlite3.Error) as exc:
            # Not even a fresh file could be made (a full or read-only card): go on with
            # what is there, so the next batch tries again instead of a closed connection.
            log.error("outbox rebuild failed: %s", exc)
            report = {
                "store": "outbox",
                "problem": "damaged",
                "file": self.path.name,
                "reason": f"{reason}; rebuild failed: {exc}",
            }
        self._conn = sql.connect(self.path, sync=self.sync)
        sql.init_schema(self._conn)
        # The rows keep their consumer bits: keep the bits' names too, even if the
        # consumers table was on a page that could not be read.
        self._conn.executemany(
            "INSERT OR REPLACE INTO consumers (name, bit) VALUES (?, ?)",
            [(name, mask.bit_length() - 1) for name, mask in self._masks.items()],
        )
        state = sql.load_state(self._conn)
        self._next_seq = max(self._next_seq, state.next_seq)
        self._snap = replace(
            self._snap,
            depth=state.depth,
            oldest_created=state.oldest_created,
            dropped_telemetry=max(self._snap.dropped_telemetry, state.dropped_telemetry),
        )
        self._report(report)

    def _commit_batch(self, batch: list[_Request]) -> None:
        for request in batch:
            if isinstance(request, _Recover) and request.generation == self._generation:
                self._recover(request.reason)
        staged: list[_Staged] = []
        increments = [r for r in batch if isinstance(r, _Increment)]
        acks = self._retry_acks + [r for r in batch if isinstance(r, _Ack)]
        self._retry_acks = []
        with self._lock:
            self._queued -= sum(1 for r in batch if isinstance(r, _Put) and r.offered)
            shed, self._shed = self._shed, 0
        # Each shed reading gets a seq nobody receives: the platform sees the gap.
        seq = self._next_seq + shed
        self._batch_dropped = shed  # readings of this batch whose seq nobody will get
        # Payloads are built before the transaction opens: a failing one fails alone.
        for put in (r for r in batch if isinstance(r, _Put)):
            if not put.future.set_running_or_notify_cancel():
                continue  # cancelled before it was stored: it never will be
            numbered = put.item.sequenced
            try:
                row = self._new_row(put, seq if numbered else 0)
            except Exception as exc:
                put.future.set_exception(exc)
                continue
            if row is None:
                put.future.set_result(-1)
                continue
            staged.append(_Staged(put.future, row, put.offered))
            if numbered:
                seq += 1
        if self._short_of_room():
            staged = self._shed_telemetry(staged, "disk almost full: telemetry shed")
        staged += self._memory_back()
        if not (staged or acks or increments or self._batch_dropped or self._dropped_owed):
            return
        try:
            out = self._write_with_fallbacks(staged, seq, acks, increments)
        except sqlite3.Error as exc:
            if no_room(exc) and any(st.row.prio is Priority.EVENT for st in staged):
                self._keep_in_memory(staged, seq, acks, increments, exc)
                return
            self._memory.add([st.row for st in staged if st.future is None])
            offered = sum(st.offered for st in staged)
            # On a full disk this repeats at every commit: say it once a minute.
            now = time.monotonic()
            quiet = no_room(exc) and now - self._warned_room < _WARN_EVERY_S
            if not quiet and no_room(exc):
                self._warned_room = now
            (log.debug if quiet else log.error)(
                "outbox commit failed (%s): %d messages refused (%d telemetry counted as"
                " dropped), %d acknowledgements kept for the next commit",
                exc,
                len(staged),
                offered,
                sum(len(a.ids) for a in acks),
            )
            self._retry_acks = acks
            self._next_seq = _stored_next_seq(self._conn, self._next_seq)
            # Nobody waits for offered telemetry: it is shed, and gets its seq (a gap)
            # with the next commit that succeeds, like the readings shed before.
            with self._lock:
                self._shed += self._batch_dropped + offered
            _fail_staged(staged, increments, f"outbox commit failed: {exc}", exc)
            return
        self._next_seq = seq
        snap = self._snap
        self._snap = replace(
            snap,
            depth=out.depth,
            oldest_created=out.oldest_created,
            dropped_telemetry=snap.dropped_telemetry + out.dropped + self._batch_dropped,
            accepted=snap.accepted + len(staged),
            commits=snap.commits + 1,
            bytes_written=snap.bytes_written
            + sum(len(st.row.payload) + len(st.row.topic.encode()) for st in staged),
        )
        self._warn_about_bound(out)
        if self._full:
            self._checkpoint()
        for st in staged:
            if st.future is not None:
                st.future.set_result(st.row.seq)
        for inc in increments:
            inc.future.set_result(out.counters[inc.key])
        if staged:
            self._notify()

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener()
            except Exception:
                log.exception("outbox listener %r failed", listener)

    def _write_with_fallbacks(
        self,
        staged: list[_Staged],
        next_seq: int,
        acks: list[_Ack],
        increments: list[_Increment],
    ) -> sql.BatchOutcome:
        """Commit; rebuild a damaged file, or free the reserve for events, and try again.

        `staged` loses its telemetry in place when the reserve is freed for events.
        """
        try:
            return self._write(staged, next_seq, acks, increments)
        except sqlite3.DatabaseError as exc:
            if dbrecovery.is_damage(exc):
                # The file went bad under us (a worn card, a power cut earlier): rebuild
                # it and commit this batch into the new one; ids and seqs are kept.
                self._recover(str(exc))
                return self._write(staged, next_seq, acks, increments)
            if not no_room(exc):
                raise
            self._enter_full(str(exc))
            if not self._room.release():
                raise
            staged[:] = self._shed_telemetry(staged, f"outbox commit failed: {exc}")
            return self._write(staged, next_seq, acks, increments)

    def _write(
        self,
        staged: list[_Staged],
        next_seq: int,
        acks: list[_Ack],
        increments: list[_Increment],
    ) -> sql.BatchOutcome:
        out = sql.write_batch(
            self._conn,
            [st.row for st in staged],
            next_seq,
            [(a.mask, a.ids) for a in acks],
            [i.key for i in increments],
            self._snap.depth,
            self.max_messages,
            # Owed: dropped while nothing could be written, already in the snapshot.
            dropped=self._batch_dropped + self._dropped_owed,
        )
        self._dropped_owed = 0
        return out

    # -- a full disk --------------------------------------------------------------

    def _short_of_room(self) -> bool:
        """True while telemetry must be shed; leaves that state once the reserve is back."""
        tight = self._room.tight()
        if not self._full:
            if tight:
                self._enter_full("free space below half the reserve")
            return tight
        # Held for a while: checkpoints give back room that the next commits take again,
        # and a disk that is nearly full must not flap between full and recovered.
        if tight or time.monotonic() - self._full_since < _FULL_HOLD_S:
            return True
        if not self._room.make_reserve():
            return True
        self._full = False
        log.warning("outbox: room again, reserve restored; telemetry is stored again")
        self._report(self._room_report("recovered"))
        return False

    def _checkpoint(self) -> None:
        # The WAL grows by a few pages a commit until the next automatic checkpoint
        # (4 MB): on a full disk, copy it back after every commit and give its space
        # back, so the writer needs little and the reserve can be made again.
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.debug("outbox checkpoint on a full disk failed: %s", exc)

    def _enter_full(self, reason: str) -> None:
        if self._full:
            return
        self._full = True
        self._full_since = time.monotonic()
        log.error("outbox: disk full (%s): telemetry is shed, events keep being stored", reason)
        self._report(self._room_report("full"))

    def _room_report(self, problem: str) -> dict[str, Any]:
        free = self._room.free_bytes()
        return {
            "store": "outbox",
            "problem": problem,
            "file": self.path.name,
            "free_bytes": max(free or 0, 0),
            "reserve_bytes": self._room.reserve_bytes if self._room.reserved else 0,
            "events_unstored": self._memory.count(),
        }

    def _shed_telemetry(self, staged: list[_Staged], why: str) -> list[_Staged]:
        """Drop the telemetry of a batch; their seqs stay taken (the gap), counted."""
        dropped = [st for st in staged if st.row.prio is Priority.TELEMETRY]
        _fail_staged(dropped, [], why, None)
        self._batch_dropped += sum(1 for st in dropped if st.row.seq)
        return [st for st in staged if st.row.prio is not Priority.TELEMETRY]

    def _keep_in_memory(
        self,
        staged: list[_Staged],
        next_seq: int,
        acks: list[_Ack],
        increments: list[_Increment],
        exc: sqlite3.Error,
    ) -> None:
        """Nothing fits any more: events go to the uplinks from memory, with their seqs."""
        self._retry_acks = acks
        self._next_seq = next_seq  # the seqs are published: never give them again
        events = [st for st in staged if st.row.prio is Priority.EVENT]
        telemetry = [st for st in staged if st.row.prio is Priority.TELEMETRY]
        _fail_staged(telemetry, increments, f"outbox commit failed: {exc}", exc)
        dropped = self._batch_dropped + sum(1 for st in telemetry if st.row.seq)
        self._dropped_owed += dropped  # written with the next commit that succeeds
        self._snap = replace(self._snap, dropped_telemetry=self._snap.dropped_telemetry + dropped)
        kept = self._memory.add([st.row for st in events])
        log.error("outbox: disk full (%s): %d events published from memory, not stored", exc, kept)
        for st in events:
            if st.future is not None:
                st.future.set_result(st.row.seq)
        self._notify()

    def _memory_back(self) -> list[_Staged]:
        """Events held in memory, to store now that there is room (ids change, seqs stay)."""
        if self._full:
            return []
        return [_Staged(None, row, False) for row in self._memory.take_all()]

    def _new_row(self, put: _Put, seq: int) -> sql.NewRow | None:
        item = put.item
        pending = 0
        for consumer in self.consumers:
            if consumer.accepts(item):
                pending |= self._masks[consumer.name]
        if not pending:
            return None
        payload = item.build_payload(seq)
        if not isinstance(payload, bytes):
            raise TypeError(f"build_payload returned {type(payload).__name__}, not bytes")
        return sql.NewRow(
            seq=seq,
            prio=Priority(item.priority),
            channel=item.channel,
            device_kind=item.device_kind,
            topic=item.topic,
            payload=payload,
            created=put.created,
            pending=pending,
            retain=item.retain,
        )

    def _warn_about_bound(self, out: sql.BatchOutcome) -> None:
        now = time.monotonic()
        if out.dropped and now - self._warned_drop >= _WARN_EVERY_S:
            self._warned_drop = now
            log.warning(
                "outbox full (%d messages): oldest telemetry dropped, %d dropped so far",
                self.max_messages,
                self._snap.dropped_telemetry,
            )
        events = out.depth[Priority.EVENT]
        if events > self.max_messages and now - self._warned_events >= _WARN_EVERY_S:
            self._warned_events = now
            log.warning(
                "outbox holds %d undelivered events, over its bound of %d: events are kept",
                events,
                self.max_messages,
            )


class OutboxReader:
    """A read connection on the outbox; use it from one thread at a time."""

    _SELECT = (
        "SELECT id, seq, prio, topic, payload, created, retain FROM messages"
        " WHERE prio = ? AND id > ? AND (pending & ?) != 0 ORDER BY id LIMIT ?"
    )

    def __init__(self, outbox: Outbox, masks: Mapping[str, int]) -> None:
        self._outbox = outbox
        self._generation, self._conn = outbox._read_connection()
        self._masks = masks
        # Per consumer: events held in memory already handed out since the cursor last
        # started over, and the last stored id read per priority (a held event's
        # negative id in `after` says nothing about the stored rows).
        self._held_read: dict[str, set[int]] = {}
        self._stored_after: dict[str, dict[Priority, int]] = {}

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
        if self._generation != self._outbox._generation:
            self._conn.close()
            self._generation, self._conn = self._outbox._read_connection()
        held_read = self._held_read.setdefault(consumer, set())
        stored_after = self._stored_after.setdefault(consumer, {})
        if all(after.get(p, 0) == 0 for p in Priority):  # a cursor starting over
            held_read.clear()
            stored_after.clear()
        held = [
            _held_row(k, row)
            for k, row in self._outbox._memory.pending(self._masks[consumer], held_read)[:limit]
        ]
        held_read.update(r.id for r in held)
        cursor = {
            p: after.get(p, 0) if after.get(p, 0) >= 0 else stored_after.get(p, 0) for p in Priority
        }
        try:
            rows = self._read(consumer, cursor, limit - len(held)) if len(held) < limit else []
        except sqlite3.DatabaseError as exc:
            if not dbrecovery.is_damage(exc):
                raise
            log.error("outbox read failed, file damaged: %s", exc)
            self._outbox.report_damage(str(exc))
            return held
        for row in rows:
            stored_after[row.priority] = max(stored_after.get(row.priority, 0), row.id)
        return held + rows

    def _read(self, consumer: str, after: dict[Priority, int], limit: int) -> list[Row]:
        mask = self._masks[consumer]
        rows: list[Row] = []
        self._conn.execute("BEGIN")  # one snapshot for both priorities
        try:
            for prio in sorted(Priority):
                if len(rows) >= limit:
                    break
                cursor = self._conn.execute(
                    self._SELECT, (int(prio), after.get(prio, 0), mask, limit - len(rows))
                )
                rows.extend(
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
                )
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("COMMIT")
        return rows

    def close(self) -> None:
        self._conn.close()


def _held_row(row_id: int, row: sql.NewRow) -> Row:
    return Row(row_id, row.seq, row.prio, row.topic, row.payload, row.created, row.retain)


def _settle_waiters(batch: list[_Request]) -> None:
    """Hand the outcome of every aput in the batch to its event loop, one call per loop."""
    by_loop: dict[
        asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], concurrent.futures.Future[int]]]
    ] = {}
    for request in batch:
        if isinstance(request, _Put) and request.waiter is not None and request.future.done():
            loop, waiter = request.waiter
            by_loop.setdefault(loop, []).append((waiter, request.future))
    for loop, pairs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            loop.call_soon_threadsafe(_apply_outcomes, pairs)


def _apply_outcomes(
    pairs: list[tuple[asyncio.Future[int], concurrent.futures.Future[int]]],
) -> None:
    for waiter, fut in pairs:
        if waiter.done():
            continue  # the awaiting task was cancelled
        if fut.cancelled():
            waiter.cancel()
        elif (exc := fut.exception()) is not None:
            waiter.set_exception(exc)
        else:
            waiter.set_result(fut.result())


def _urgent(request: _Request) -> bool:
    if isinstance(request, _Put):
        return request.item.priority == Priority.EVENT
    return isinstance(request, _Increment | _Recover)


def _fail(batch: list[_Request], exc: BaseException) -> None:
    for request in batch:
        fut = request.future if isinstance(request, _Put | _Increment) else None
        if fut is not None and not fut.done():
            fut.set_exception(OutboxError(f"outbox writer failed: {exc!r}"))


def _stored_next_seq(conn: sqlite3.Connection, fallback: int) -> int:
    # A failed COMMIT may still have reached the disk (e.g. an fsync error after the
    # write): take the stored value if it is higher, so no seq is handed out twice.
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()
        return max(fallback, int(row[0]))
    except sqlite3.Error:
        return fallback


@dataclass(slots=True)
class _Staged:
    """A row of the batch being committed; `future` None: an event held in memory before."""

    future: concurrent.futures.Future[int] | None
    row: sql.NewRow
    offered: bool


def _fail_staged(
    staged: Iterable[_Staged],
    increments: Iterable[_Increment],
    why: str,
    cause: BaseException | None,
) -> None:
    for fut in [st.future for st in staged] + [i.future for i in increments]:
        if fut is not None and not fut.done():
            error = OutboxError(why)
            error.__cause__ = cause
            fut.set_exception(error)
