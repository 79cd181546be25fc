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

from gateway import outbox_sql as sql
from gateway.config import SyncMode
from gateway.model import Priority

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
_WARN_EVERY_S = 60.0
_LOWEST_EVERY_S = 0.5


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


_Request = _Put | _Ack | _Increment
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
        self._warned_drop = self._warned_events = -math.inf
        self._lowest_stale = False
        self._lowest_at = -math.inf

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        """Create the file and schema, release removed consumers, start the writer thread."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError(f"outbox {self.path} was already opened")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sql.connect(self.path, sync=self.sync)
            try:
                sql.init_schema(conn)
                self._masks = sql.reconcile_consumers(conn, [c.name for c in self.consumers])
                state = sql.load_state(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
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
        log.info(
            "outbox %s open: %d messages stored, next seq %d",
            self.path,
            sum(state.depth.values()),
            state.next_seq,
        )

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
        return OutboxReader(sql.connect(self.path, sync=None), dict(self._masks))

    def ack(self, consumer: str, ids: Iterable[int]) -> None:
        """Mark rows delivered by `consumer`; applied with the next commit."""
        mask = self._masks[consumer]
        ids = tuple(ids)
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
            lowest_seq=snap.lowest_seq,
        )

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
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            log.exception("outbox checkpoint at close failed")
        self._conn.close()
        if self._retry_acks:
            log.warning("outbox closed with acknowledgements not stored: rows will be resent")

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

    def _commit_batch(self, batch: list[_Request]) -> None:
        conn = self._conn
        staged: list[tuple[concurrent.futures.Future[int], sql.NewRow]] = []
        offered = 0  # of the staged rows, telemetry nobody waits for
        increments = [r for r in batch if isinstance(r, _Increment)]
        acks = self._retry_acks + [r for r in batch if isinstance(r, _Ack)]
        self._retry_acks = []
        with self._lock:
            self._queued -= sum(1 for r in batch if isinstance(r, _Put) and r.offered)
            shed, self._shed = self._shed, 0
        # Each shed reading gets a seq nobody receives: the platform sees the gap.
        seq = self._next_seq + shed
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
            staged.append((put.future, row))
            offered += put.offered
            if numbered:
                seq += 1
        if not staged and not acks and not increments and not shed:
            return
        snap = self._snap
        try:
            out = sql.write_batch(
                conn,
                [row for _, row in staged],
                seq,
                [(a.mask, a.ids) for a in acks],
                [i.key for i in increments],
                snap.depth,
                self.max_messages,
                shed=shed,
            )
        except sqlite3.Error as exc:
            log.error(
                "outbox commit failed (%s): %d messages refused (%d telemetry counted as"
                " dropped), %d acknowledgements kept for the next commit",
                exc,
                len(staged),
                offered,
                sum(len(a.ids) for a in acks),
            )
            self._retry_acks = acks
            self._next_seq = _stored_next_seq(conn, self._next_seq)
            # Nobody waits for offered telemetry: it is shed, and gets its seq (a gap)
            # with the next commit that succeeds, like the readings shed before.
            with self._lock:
                self._shed += shed + offered
            for fut in [f for f, _ in staged] + [i.future for i in increments]:
                error = OutboxError(f"outbox commit failed: {exc}")
                error.__cause__ = exc
                fut.set_exception(error)
            return
        self._next_seq = seq
        self._snap = replace(
            snap,
            depth=out.depth,
            oldest_created=out.oldest_created,
            dropped_telemetry=snap.dropped_telemetry + out.dropped + shed,
            accepted=snap.accepted + len(staged),
            commits=snap.commits + 1,
            bytes_written=snap.bytes_written
            + sum(len(r.payload) + len(r.topic.encode()) for _, r in staged),
        )
        self._warn_about_bound(out)
        for fut, row in staged:
            fut.set_result(row.seq)
        for inc in increments:
            inc.future.set_result(out.counters[inc.key])
        if staged:
            for listener in self._listeners:
                try:
                    listener()
                except Exception:
                    log.exception("outbox listener %r failed", listener)

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

    def __init__(self, conn: sqlite3.Connection, masks: Mapping[str, int]) -> None:
        self._conn = conn
        self._masks = masks

    def counter(self, key: str) -> int:
        """A durable counter's committed value (see `Outbox.meta_increment`); 0 if unset."""
        found = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return 0 if found is None else int(found[0])

    def next_batch(self, consumer: str, after: dict[Priority, int], limit: int) -> list[Row]:
        """Rows still pending for `consumer`: events first, then telemetry, each by id.

        `after[p]` is the last id already read of priority p (missing: 0).
        """
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
            self._conn.execute("COMMIT")
        return rows

    def close(self) -> None:
        self._conn.close()


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
    return isinstance(request, _Increment)


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
