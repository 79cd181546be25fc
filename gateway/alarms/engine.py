"""The alarm engine in the running gateway: the book's changes stored, published, announced.

Every change is stored first (durable: by the store's writer thread, so a commit never
blocks the event loop; what follows runs from the write's callback, in order), then its
document handed to the outbox as a retained message on `{base}/alarms/{alarm_id}` (an
empty retained payload follows the closed document, so the broker forgets it), then
the listeners (the local web console) get it (`publisher`).  `run()` is the engine's
service: it restores the open alarms and their timers, republishes what a crash kept
from the outbox, and then applies the timers, the acknowledgements queued by `gateway
ack`, and the escalation output.

Timers count on a run clock (gateway.sdk.clock.RunClock) whose mark is stored with every
change and every few seconds while a timer runs: a step of the wall clock (NTP at boot)
neither fires nor delays them, also across a restart; see docs/config.md#alarms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from community_protocol.topics import Topics
from gateway.config import ClockCheck
from gateway.sdk.clock import Clock, RunClock
from gateway.sdk.model import ClockState, DeviceRef, Event, Identity, Message
from gateway.storage.outbox import Outbox

from .book import AlarmBook
from .model import Change, DeviceInfo, Instant, Via
from .publisher import CHANNEL, AlarmPublisher, Listener, log_mark_error
from .rules import OFFLINE, ONLINE
from .settings import AlarmsConfig
from .store import AlarmStore

__all__ = [
    "CHANNEL",
    "AckOutcome",
    "AlarmEngine",
    "OutputSwitch",
    "TimeSource",
    "UnknownAlarm",
    "check_ack_fields",
]

log = logging.getLogger(__name__)

MAX_BY = 64
MAX_NOTE = 500
_POLL_S = 0.5  # how often queued `gateway ack`s are looked for (the brief says <= 1 s)
# While a timer runs, the run clock's mark is stored every MARK_EVERY_S, or every
# 1/MARK_SHARE of the time left to the nearest deadline when that is longer (at most
# MARK_MAX_S): after a power cut a timer loses at most that much of its progress (plus
# the time the host was off), so an escalation due in a minute loses 5 s, a closed
# alarm's day of retention a few minutes, and a quiet estate's SD card is not written
# every 5 s for a timer a day away (issue 16).
MARK_EVERY_S = 5.0
MARK_SHARE = 30
MARK_MAX_S = 300.0
_REPEATS = frozenset({"repeated", "repeated_damped"})

# Switches the escalation output (a buzzer relay) on (True) or off (False).
OutputSwitch = Callable[[bool], Awaitable[None]]


class UnknownAlarm(LookupError):
    """No alarm with that id on this gateway."""


@dataclass(frozen=True, slots=True)
class AckOutcome:
    """Result of an acknowledgement: "accepted" or "already_acknowledged", and the document."""

    status: str
    alarm: dict[str, Any]


def check_ack_fields(by: object, note: object) -> tuple[str, str]:
    """`by` and `note` as the contract allows them; ValueError naming the field otherwise."""
    if not isinstance(by, str):
        raise ValueError(f"field 'by' must be a string, not {type(by).__name__}")
    if not 1 <= len(by) <= MAX_BY:
        raise ValueError(f"field 'by' must be 1-{MAX_BY} characters (got {len(by)})")
    if not isinstance(note, str):
        raise ValueError(f"field 'note' must be a string, not {type(note).__name__}")
    if len(note) > MAX_NOTE:
        raise ValueError(f"field 'note' must be at most {MAX_NOTE} characters (got {len(note)})")
    return by, note


class TimeSource(Protocol):
    """The clocks the engine reads (gateway.sdk.clock.Clock; tests give their own)."""

    boot_id: str | None

    def wall(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def state(self) -> ClockState: ...


class AlarmEngine:
    """The gateway's alarms: observer of messages and availability, and a service.

    Used on the event loop only.  Constructor only assigns; `start()` (called by
    `run()`, or by the first observed signal) opens the store.
    """

    def __init__(
        self,
        cfg: AlarmsConfig,
        *,
        path: Path,
        topics: Topics,
        devices: Mapping[str, DeviceInfo],
        outbox: Outbox,
        output: OutputSwitch | None = None,
        clock: TimeSource | None = None,
    ) -> None:
        self.cfg = cfg
        self.path = path
        self.topics = topics
        self.identity: Identity = topics.identity
        self.devices = devices
        self.outbox = outbox
        self.output = output
        self.clock: TimeSource = Clock(ClockCheck.KERNEL) if clock is None else clock
        self.store = AlarmStore(path)
        self.publisher = AlarmPublisher(outbox, topics, self.store, cfg.closed_retain_s)
        self._run: RunClock | None = None
        self._marked = 0.0  # monotonic time the run clock's mark was last stored
        self._book: AlarmBook | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        # Saves handed to the store's writer and not yet followed up on the loop; their
        # outcomes come back in order through `_saved` (see `_commit`).
        self._saving = 0
        self._saved: deque[tuple[list[Change], Future[int]]] = deque()
        self._store_error = ""
        self._output_state: bool | None = None  # None: unknown, set it at the next tick
        self._output_error = ""
        self._available: dict[str, bool] = {}  # device id -> last reported availability

    # ---- lifecycle ----------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._book is not None

    def start(self) -> None:
        """Open the store, restore open alarms and timers, republish unpublished revs."""
        if self._book is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.store.open()
        self.store.start_writer()
        if self.store.salvage is not None:
            self.outbox.report_storage_fault({"store": "alarms", **self.store.salvage.as_dict()})
        mark = self.store.run_mark()
        self._run = RunClock.resume(mark, self.clock.boot_id, self.clock.monotonic)
        if mark is not None and mark.boot_id != self.clock.boot_id:
            log.info(
                "alarms: the host rebooted since the alarm timers last ran; they carry on"
                " from where they were then (the time it was off is not counted)"
            )
        now = self.now()
        restored = self.store.open_alarms(now)
        self._book = AlarmBook(
            self.cfg.rule_set(),
            self.cfg.escalation,
            self.cfg.damping_s,
            self.store.new_id,
            restored,
        )
        self._book.bound_timers(now)
        self.publisher.store_open = True
        if restored:
            log.info("alarms: %d open alarms restored from %s", len(restored), self.path)
        self.publisher.republish()
        if self.cfg.closed_retain_s > 0:
            self.publisher.keep_closed(self.store.recent_closed(500), now.wall)

    def close(self) -> None:
        """Wait for the writes queued (their alarms are published), store the mark, close."""
        if self._book is not None and self._run is not None:
            try:
                self.store.save_mark_later(self._run.mark()).result()
            except Exception as exc:  # closing anyway: the last stored mark stays valid
                log.warning("alarms: timer progress not stored at close: %s", exc)
            self._follow_up()  # the saves before the mark are done: publish them now
        self._book = None
        self._run = None
        self.publisher.store_open = False
        self.store.close()

    def now(self) -> Instant:
        """This moment: wall clock (and whether it is synced) for stamps, run clock for timers."""
        run = self._run
        assert run is not None, "start() first"
        return Instant(self.clock.wall(), run.now(), self.clock.state() is ClockState.SYNCED)

    async def run(self) -> None:
        """The engine's service: timers, queued acknowledgements, output, until cancelled."""
        self.start()
        assert self._wake is not None
        try:
            while True:
                book = self._require()
                self._commit(book.tick(self.now()))
                if self.store.backlog and not self._saving:
                    self._commit([])  # stores what the database refused before
                await self._apply_queued_acks()
                if not self._saving:  # a rev being saved is published when it is stored
                    self.publisher.republish()
                self.publisher.forget_due()
                await self._sync_output(book.output_wanted())
                deadline = book.next_deadline()
                delay = _POLL_S
                if deadline is not None:
                    self._keep_mark(deadline - self.now().run)
                    delay = min(delay, max(0.01, deadline - self.now().run))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
        finally:
            self.close()

    def _keep_mark(self, time_left_s: float) -> None:
        assert self._run is not None
        every = min(MARK_MAX_S, max(MARK_EVERY_S, time_left_s / MARK_SHARE))
        if self.clock.monotonic() - self._marked >= every:
            # Counted from now, stored or not: the timers keep counting, the next mark
            # says where (and a save of changes stores the mark with them).
            self._marked = self.clock.monotonic()
            self.store.save_mark_later(self._run.mark()).add_done_callback(log_mark_error)

    def _require(self) -> AlarmBook:
        if self._book is None:
            self.start()
        assert self._book is not None
        return self._book

    # ---- inputs -------------------------------------------------------------------

    def observe(self, message: Message) -> None:
        """Message observer: events raise and clear alarms."""
        if isinstance(message, Event):
            clears = message.data.get("clears")
            self._signal(
                message.device, str(message.type), clears if isinstance(clears, str) else None
            )

    def observe_availability(self, ref: DeviceRef, available: bool | None, reason: str) -> None:
        """Availability observer: offline raises a maintenance alarm, online clears it.

        Only a change counts: a driver that reports "offline" again with a new reason
        (or at every failed poll) does not make a repeat of the alarm each time.
        Unknown (None) is no news: it neither raises nor clears.
        """
        if available is None:
            return
        if self._available.get(ref.id) is available:
            return
        self._available[ref.id] = available
        self._signal(ref, ONLINE if available else OFFLINE)

    def _signal(self, ref: DeviceRef, signal: str, clears: str | None = None) -> None:
        device = self.devices.get(ref.id) or DeviceInfo.of(ref)
        self._commit(self._require().signal(device, signal, self.now(), clears=clears))

    async def acknowledge(self, alarm_id: str, *, by: str, note: str = "", via: str) -> AckOutcome:
        """Acknowledge an alarm (the in-process API; MQTT and `gateway ack` come here too).

        Raises UnknownAlarm for an id this gateway never had, ValueError for a bad
        `by`, `note` or `via`.  Returns once the change is durable; its document goes
        out through the outbox (so also later, when the uplink is down now).
        """
        by, note = check_ack_fields(by, note)
        try:
            how = Via(via)
        except ValueError:
            raise ValueError(f"via must be one of {', '.join(v.value for v in Via)}") from None
        status, alarm, changes = self._require().acknowledge(alarm_id, by, note, how, self.now())
        if status == "unknown":
            # Closed, so no longer in the book: in the database once the saves before are.
            await asyncio.wrap_future(self.store.write(_nothing))
            closed = self.store.get(alarm_id)
            if closed is None:
                raise UnknownAlarm(f"unknown alarm {alarm_id!r}")
            # A closed alarm was acknowledged (closing needs it): same answer as a repeat.
            return AckOutcome("already_acknowledged", closed.document(self.identity))
        saved = self._commit(changes)
        assert alarm is not None
        if status == "accepted":
            log.info("alarm %s acknowledged by %s via %s", alarm_id, by, how)
        if saved is not None:
            # A database that refuses does not fail the ack: published from memory.
            with contextlib.suppress(sqlite3.Error):
                await asyncio.wrap_future(saved)
        return AckOutcome(status, alarm.document(self.identity))

    async def _apply_queued_acks(self) -> None:
        for pending in self.store.pending_acks():
            try:
                outcome = await self.acknowledge(
                    pending.alarm_id, by=pending.by, note=pending.note, via=pending.via
                )
            except UnknownAlarm as exc:
                result = ("unknown", str(exc))
            except ValueError as exc:
                result = ("error", str(exc))
            else:
                result = (outcome.status, json.dumps(outcome.alarm))
            # Waited for: the next look at the queue must not see this one again.
            await asyncio.wrap_future(self.store.finish_ack_later(pending.id, *result))

    # ---- outputs ------------------------------------------------------------------

    def snapshot(self, recent: int = 50) -> list[dict[str, Any]]:
        """Documents of every alarm not closed, then the `recent` last closed; newest first."""
        if self._book is None:
            return []
        open_ = sorted(self._book.open_alarms(), key=lambda a: a.raised_at, reverse=True)
        closed = self.store.recent_closed(recent) if recent > 0 else []
        return [a.document(self.identity) for a in [*open_, *closed]]

    def listen(self, callback: Listener) -> Callable[[], None]:
        """Call `callback(document)` whenever a document is published; returns the unsubscribe.

        Every transition and escalation is published at once; repeats of one alarm
        (count, last seen) at most once a second.
        """
        return self.publisher.listen(callback)

    def _commit(self, changes: Iterable[Change]) -> Future[int] | None:
        """Hand `changes` to the store's writer; they are published once it is done.

        Durable before anyone hears of it: a crash after the write is repaired at start.
        A store that refuses (a full or failing card) must not cost the alarm: it is
        published from memory and stored when the store takes it again (run()).
        Returns the save's future (None: nothing to save).
        """
        changes = list(changes)
        if not changes and not self.store.backlog:
            return None
        loop = self._loop
        assert loop is not None
        saved = self.store.save_later(changes, self._require_run().mark())
        self._saving += 1

        def done(fut: Future[int]) -> None:  # in the writer thread
            self._saved.append((changes, fut))
            with contextlib.suppress(RuntimeError):  # a closed loop: close() followed up
                loop.call_soon_threadsafe(self._follow_up)

        saved.add_done_callback(done)
        return saved

    def _follow_up(self) -> None:
        """On the loop: publish what the writer stored (or refused), in the order saved."""
        while self._saved:
            changes, saved = self._saved.popleft()
            self._saving -= 1
            self._after_save(changes, saved)
        if self._wake is not None:
            self._wake.set()

    def _after_save(self, changes: list[Change], saved: Future[int]) -> None:
        if (error := saved.exception()) is not None:
            if not isinstance(error, sqlite3.Error):
                log.error("alarms: storing %d changes failed", len(changes), exc_info=error)
            elif not self._store_error:
                log.error(
                    "alarms: the alarm database refused a change (%s); alarms are published"
                    " from memory and stored as soon as it takes them again",
                    error,
                )
            self._store_error = str(error)
        else:
            self._marked = self.clock.monotonic()
            if self._store_error:
                log.info(
                    "alarms: the alarm database stores again (%d changes caught up)",
                    saved.result(),
                )
                self._store_error = ""
        for ch in changes:
            if not ch.publish:
                continue
            repeat = ch.what in _REPEATS
            log.log(
                logging.DEBUG if repeat else logging.INFO,
                "alarm %s %s: %s %s of %s (rev %d)",
                ch.alarm.id,
                ch.what,
                ch.alarm.severity,
                ch.alarm.type,
                ch.alarm.device.id,
                ch.alarm.rev,
            )
            self.publisher.offer(ch.alarm, repeat=repeat)

    def _require_run(self) -> RunClock:
        assert self._run is not None, "start() first"
        return self._run

    async def _sync_output(self, want: bool) -> None:
        if self.output is None or self._output_state is want:
            return
        try:
            await self.output(want)
        except Exception as exc:  # retried at the next tick; logged once per reason
            if str(exc) != self._output_error:
                self._output_error = str(exc)
                log.warning(
                    "alarm output could not be switched %s: %s (retrying)",
                    "on" if want else "off",
                    exc,
                )
            return
        self._output_error = ""
        self._output_state = want
        log.info("alarm output switched %s", "on" if want else "off")


def _nothing(conn: sqlite3.Connection) -> None:
    """A write that writes nothing: done once the writes queued before it are."""
