"""The outbox's value types, the requests queued to its writer, and how futures are settled.

Public types (`OutboxItem`, `Consumer`, `Row`, `OutboxStats`, `OutboxError`) are
re-exported by `gateway.storage.outbox`; the rest is shared by the outbox's modules
(the facade, the writer thread, the reader) and is not for other packages.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.sdk.model import Priority
from gateway.storage.outbox_sql import NewRow
from gateway.storage.sqlitestore import SyncMode

__all__ = [
    "STOP",
    "Ack",
    "Batch",
    "CommitNews",
    "Consumer",
    "Handoff",
    "Increment",
    "OutboxError",
    "OutboxItem",
    "OutboxStats",
    "Put",
    "Recover",
    "Request",
    "Row",
    "Settings",
    "Snapshot",
    "Staged",
    "fail",
    "fail_staged",
    "new_row",
    "read_write_bytes",
    "settle_waiters",
]

log = logging.getLogger("gateway.storage.outbox")


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
class Put:
    """A message queued for the writer; `future` resolves with its seq."""

    item: OutboxItem
    future: concurrent.futures.Future[int]
    created: float
    # For aput: the asyncio future to settle, resolved for a whole batch with one
    # call_soon_threadsafe per loop instead of one wake-up of the loop per message.
    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[int]] | None = None
    # Handed off by `offer`: nobody waits for it, and it counts against `max_queued`.
    offered: bool = False


@dataclass(slots=True)
class Ack:
    """Rows a consumer (`mask`) delivered, applied with the next commit."""

    mask: int
    ids: tuple[int, ...]


@dataclass(slots=True)
class Increment:
    """A durable counter to add one to; `future` resolves with the new value."""

    key: str
    future: concurrent.futures.Future[int] = field(default_factory=concurrent.futures.Future)


@dataclass(slots=True)
class Recover:
    """A reader found the file damaged: rebuild it, unless that was done already."""

    reason: str
    generation: int  # the file the reader found damaged; already rebuilt if older


Request = Put | Ack | Increment | Recover
STOP = None  # queued by close(): everything queued before it is still committed


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counters the writer publishes after each commit; replaced whole, read lock-free."""

    depth: Mapping[Priority, int]
    oldest_created: float | None = None
    dropped_telemetry: int = 0
    accepted: int = 0
    commits: int = 0
    bytes_written: int = 0
    lowest_seq: Mapping[str, int] = field(default_factory=dict)
    # Card rows delivered to every consumer whose acks wait for a card write
    # (outbox_ram.CardAcks): in `depth` above, not waiting any more.
    delivered: Mapping[Priority, int] = field(default_factory=dict)


def read_write_bytes() -> int | None:
    """Bytes this process made the kernel write to storage so far; None if not told."""
    try:
        with open("/proc/self/io", encoding="ascii") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def settle_waiters(batch: list[Request]) -> None:
    """Hand the outcome of every aput in the batch to its event loop, one call per loop."""
    by_loop: dict[
        asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int], concurrent.futures.Future[int]]]
    ] = {}
    for request in batch:
        if isinstance(request, Put) and request.waiter is not None and request.future.done():
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


def fail(batch: list[Request], exc: BaseException) -> None:
    """Fail every future of a batch the writer could not handle (a bug: callers never hang)."""
    for request in batch:
        fut = request.future if isinstance(request, Put | Increment) else None
        if fut is not None and not fut.done():
            fut.set_exception(OutboxError(f"outbox writer failed: {exc!r}"))


@dataclass(slots=True)
class Staged:
    """A row of the batch being committed; `future` None: an event held in memory before."""

    future: concurrent.futures.Future[int] | None
    row: NewRow
    offered: bool


@dataclass(slots=True)
class Batch:
    """What one commit writes: the rows, the seq after them, acknowledgements, counters."""

    staged: list[Staged]
    next_seq: int
    acks: list[Ack]
    increments: list[Increment]


def fail_staged(
    staged: Iterable[Staged],
    increments: Iterable[Increment],
    why: str,
    cause: BaseException | None,
) -> None:
    """Fail the futures of rows and counters a commit could not store, with `why`."""
    for fut in [st.future for st in staged] + [i.future for i in increments]:
        if fut is not None and not fut.done():
            error = OutboxError(why)
            error.__cause__ = cause
            fut.set_exception(error)


def new_row(
    put: Put, seq: int, consumers: Iterable[Consumer], masks: Mapping[str, int]
) -> NewRow | None:
    """The row to store for `put` (payload built with `seq`); None: no consumer takes it."""
    item = put.item
    pending = 0
    for consumer in consumers:
        if consumer.accepts(item):
            pending |= masks[consumer.name]
    if not pending:
        return None
    payload = item.build_payload(seq)
    if not isinstance(payload, bytes):
        raise TypeError(f"build_payload returned {type(payload).__name__}, not bytes")
    return NewRow(
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


class Handoff:
    """The queue from producers to the writer thread, and the telemetry counts both keep.

    `lock` orders "is the outbox open?" with enqueueing; under it, `queued` is the
    telemetry offered and not yet taken by the writer, and `shed` the telemetry shed
    since the writer last accounted for it (it still owes those a seq each).
    """

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Request | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.queued = 0
        self.shed = 0


class Settings(Protocol):
    """What the writer reads of its outbox's settings (`gateway.storage.outbox.Outbox`)."""

    path: Path
    max_messages: int
    commit_interval_ms: int
    quiet_ms: float
    sync: SyncMode
    consumers: tuple[Consumer, ...]
    # The memory tier's file (gateway.storage.outbox_ram), None: telemetry goes to the card.
    ram_path: Path | None
    spill_after_s: float
    # Builds the `gateway.storage` event (runtime: it knows the envelope) that the
    # outbox stores about its own faults: a rebuilt file, a full disk.
    on_storage_fault: Callable[[Mapping[str, Any]], OutboxItem] | None


@dataclass
class CommitNews:
    """What the writer tells the readers: how many events it committed, and a wake-up.

    `events` grows with every event committed and is read lock-free: an uplink that
    sees it grow fetches them at once instead of waiting for room in its in-flight
    window (alarm latency).  `listeners` are called in the writer thread after each
    commit that stored rows; the tuple is replaced whole, never changed in place.
    """

    listeners: tuple[Callable[[], None], ...] = ()
    events: int = 0
    _told: int = field(default=0, init=False)  # the batch's events told at the card's commit

    def new_batch(self) -> None:
        self._told = 0

    def card_committed(self, events: int) -> None:
        """The card has a batch's `events` before its readings go to the RAM file: the
        uplinks publish them meanwhile (alarm latency, issue 16)."""
        self.events += events
        self._told += events
        self.notify()

    def batch_committed(self, events: int) -> None:
        """The whole batch is stored, `events` of it events: wake the readers for the rest."""
        self.events += max(0, events - self._told)  # a batch written twice told twice
        self._told = 0
        self.notify()

    def notify(self) -> None:
        for listener in self.listeners:
            try:
                listener()
            except Exception:
                log.exception("outbox listener %r failed", listener)
