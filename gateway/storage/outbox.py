"""The durable outbox between drivers and the uplinks: SQLite in WAL mode, group commit.

Drivers `put` messages; the future resolves with the message's `seq` once the row is
committed (fsync'ed at every commit with `SyncMode.FULL`, at checkpoints with `NORMAL`).
Uplinks (the MQTT publisher, an InfluxDB sink) each read with their own `OutboxReader`
and `ack` what they delivered; a row is deleted when every consumer that accepted it
has acknowledged it.  Delivery is at-least-once: what was not acknowledged is read
again after a restart.

One writer thread owns the write connection (`outbox_writer`) and commits what is
queued in groups (`outbox_batch`), adapting to the load: telemetry waits for company
only while more keeps arriving (within `quiet_ms` of the last), for at most
`commit_interval_ms`, so a lone reading commits at once and a burst shares one commit
(fewer writes to the SD card); an event, or a `meta_increment`, commits at once (alarm
latency); acknowledgements ride along with the next commit.  Readers are `outbox_reader`; a damaged file is rebuilt
(`outbox_recovery`); a full disk sheds telemetry and keeps events (`outbox_room`).

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
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from gateway.sdk.model import Priority
from gateway.storage import outbox_sql as sql
from gateway.storage.diskspace import Room
from gateway.storage.outbox_batch import QUIET_MS
from gateway.storage.outbox_memory import Unstored
from gateway.storage.outbox_ram import SPILL_AFTER_S, ram_file
from gateway.storage.outbox_reader import OutboxReader
from gateway.storage.outbox_types import (
    STOP,
    Ack,
    Consumer,
    Handoff,
    Increment,
    OutboxError,
    OutboxItem,
    OutboxStats,
    Put,
    Recover,
    Request,
    Row,
    read_write_bytes,
)
from gateway.storage.outbox_writer import Writer
from gateway.storage.sqlitestore import SyncMode, connect

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

# Telemetry waiting for the writer: at 640 readings/s (32 meters every 50 ms) this is
# over 15 s of a stalled disk, and at about 1 KiB a message a bounded 10 MB.
MAX_QUEUED = 10_000
# Kept free for events (see gateway.storage.diskspace): about 8,000 events of 500 bytes.
RESERVE_BYTES = 4 * 1024 * 1024


class _Unwaited(concurrent.futures.Future[int]):
    """The future of offered telemetry: nobody waits for it, so it keeps nothing.

    One shared instance instead of a Future (with its Condition and RLock) per reading:
    about a fifth of the CPU an offered reading cost the outbox (issue 16's profile).
    """

    def __init__(self) -> None:  # no Condition: nothing ever waits on this one
        pass

    def set_running_or_notify_cancel(self) -> bool:
        return True

    def set_result(self, result: int) -> None:
        pass

    def set_exception(self, exception: BaseException | None) -> None:
        pass

    def done(self) -> bool:
        return True

    def cancelled(self) -> bool:
        return False


UNWAITED = _Unwaited()


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
        quiet_ms: float = QUIET_MS,
        ram_dir: Path | None = None,
        spill_after_s: float = SPILL_AFTER_S,
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
        self.quiet_ms = quiet_ms
        self.sync = sync
        self.consumers = tuple(consumers)
        self.max_queued = max_queued
        # Telemetry waits in RAM until the broker has it (gateway.storage.outbox_ram).
        self.ram_path = None if ram_dir is None else ram_file(path, ram_dir)
        self.spill_after_s = spill_after_s
        # Builds the `gateway.storage` event (runtime: it knows the envelope) that the
        # outbox stores about its own faults: a rebuilt file, a full disk.
        self.on_storage_fault = on_storage_fault
        self._room = Room(path, reserve_bytes)
        self._memory = Unstored()
        self._handoff = Handoff()
        self._state = "new"  # new -> open -> closed, under the hand-off's lock
        self._writer = Writer(self, self._handoff, self._room, self._memory)
        self._opened_at = 0.0
        self._io_at_open: int | None = None

    # -- lifecycle ---------------------------------------------------------------

    def open(self) -> None:
        """Create the file and schema, release removed consumers, start the writer thread."""
        with self._handoff.lock:
            if self._state != "new":
                raise RuntimeError(f"outbox {self.path} was already opened")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            state = self._writer.open()
            self._opened_at = time.monotonic()
            self._io_at_open = read_write_bytes()
            self._state = "open"
        log.info(
            "outbox %s open: %d messages stored, next seq %d",
            self.path,
            sum(state.depth.values()),
            state.next_seq,
        )

    def report_storage_fault(self, data: Mapping[str, Any]) -> None:
        """Store a `gateway.storage` event for another store (alarms, requests)."""
        with self._handoff.lock:
            if self._state == "open":
                self._writer.report(data)

    def report_damage(self, reason: str) -> None:
        """A reader found the file damaged: have the writer rebuild it (once per file)."""
        with self._handoff.lock:
            if self._state == "open":
                self._handoff.queue.put(Recover(reason, self._writer.generation))

    def close(self) -> None:
        """Commit everything queued, stop the writer, checkpoint the WAL.  Idempotent."""
        with self._handoff.lock:
            if self._state != "open":
                self._state = "closed"
                return
            self._state = "closed"
            self._handoff.queue.put(STOP)
        assert self._writer.thread is not None
        self._writer.thread.join()

    # -- producers ----------------------------------------------------------------

    def put(self, item: OutboxItem) -> concurrent.futures.Future[int]:
        """Queue a message; the future resolves with its seq once committed (-1: not stored)."""
        fut: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._enqueue(Put(item, fut, time.time()))
        return fut

    def offer(self, item: OutboxItem) -> bool:
        """Hand telemetry to the writer without waiting for its commit.

        False: `max_queued` readings already wait, so this one is shed (it takes a seq
        and counts as dropped telemetry).  What was offered before `close()` is
        committed by it.
        """
        handoff = self._handoff
        with handoff.lock:
            if self._state != "open":
                raise RuntimeError(f"outbox {self.path} is not open ({self._state})")
            if handoff.queued >= self.max_queued:
                handoff.shed += 1
                return False
            handoff.queued += 1
            handoff.queue.put(Put(item, UNWAITED, time.time(), offered=True))
        return True

    async def aput(self, item: OutboxItem) -> int:
        """`put` for asyncio code: returns the seq once the message is committed."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[int] = loop.create_future()
        self._enqueue(Put(item, concurrent.futures.Future(), time.time(), (loop, waiter)))
        return await waiter

    def meta_increment(self, key: str) -> int:
        """Add one to a durable counter (e.g. the MQTT session) and return it once committed."""
        if threading.current_thread() is self._writer.thread:
            raise RuntimeError("meta_increment would wait for itself in the writer thread")
        request = Increment(key)
        self._enqueue(request)
        return request.future.result()

    def flush_acks(self) -> None:
        """Commit now the acknowledgements held for the next card write (outbox_ram.CardAcks).

        For a consumer about to read everything still pending again (the uplink after a
        reconnection): what the broker already acknowledged is then no longer pending,
        and is not sent twice.  Counted in the meta row `ack_flushes`.
        """
        self.meta_increment("ack_flushes")

    def _enqueue(self, request: Request) -> None:
        with self._handoff.lock:
            if self._state != "open":
                raise RuntimeError(f"outbox {self.path} is not open ({self._state})")
            self._handoff.queue.put(request)

    # -- consumers ----------------------------------------------------------------

    def reader(self) -> OutboxReader:
        """A read connection for one thread at a time; WAL readers do not block the writer."""
        if self._state != "open":
            raise RuntimeError(f"outbox {self.path} is not open ({self._state})")
        return OutboxReader(
            self._read_connection,
            lambda: self._writer.generation,
            self._memory,
            self.report_damage,
            dict(self._writer.masks),
            self.ram_path,
        )

    def _read_connection(self) -> tuple[int, sqlite3.Connection]:
        # Generation first: a rebuild in between makes the reader reopen once more.
        generation = self._writer.generation
        return generation, connect(self.path, sync=None)

    def ack(self, consumer: str, ids: Iterable[int]) -> None:
        """Mark rows delivered by `consumer`; applied with the next commit."""
        mask = self._writer.masks[consumer]
        ids = tuple(ids)
        held = [i for i in ids if i < 0]  # events the disk refused, held in memory
        if held:
            self._memory.ack(mask, held)
            ids = tuple(i for i in ids if i >= 0)
        if ids:
            self._enqueue(Ack(mask, ids))

    def events_committed(self) -> int:
        """How many events were committed since `open()`; grows, read lock-free."""
        return self._writer.news.events

    def add_listener(self, fn: Callable[[], None]) -> None:
        """Call `fn()` in the writer thread after each commit that stored rows; keep it short."""
        with self._handoff.lock:
            self._writer.news.listeners = (*self._writer.news.listeners, fn)

    def stats(self) -> OutboxStats:
        """Current figures, from counters the writer keeps; no database access."""
        snap = self._writer.snap
        hours = max(time.monotonic() - self._opened_at, 1.0) / 3600
        disk: float | None = None
        now_io = read_write_bytes()
        if self._state != "new" and self._io_at_open is not None and now_io is not None:
            disk = (now_io - self._io_at_open) / hours
        depth = {p: max(0, n - snap.delivered.get(p, 0)) for p, n in snap.depth.items()}
        return OutboxStats(
            depth=sum(depth.values()),
            depth_events=depth[Priority.EVENT],
            depth_telemetry=depth[Priority.TELEMETRY],
            oldest_age_s=None
            if snap.oldest_created is None
            else max(0.0, time.time() - snap.oldest_created),
            dropped_telemetry=snap.dropped_telemetry,
            accepted_total=snap.accepted,
            commits_total=snap.commits,
            bytes_written_per_hour=snap.bytes_written / hours if self._state != "new" else 0.0,
            disk_write_bytes_per_hour=disk,
            queued=self._handoff.queued,
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
            for name, mask in self._writer.masks.items()
        }
        return {name: min(value, held[name] or value) for name, value in lowest.items()}
