"""Inactivity (wellness) check: no sign of life in a flat for a window raises an event.

Elderly-care services check on residents living alone when nothing has moved in their
flat for a long time.  The gateway sees every door, motion sensor, button and meter
message after it is durable (a `gateway.host.Host` message observer); `classify` says whether one
is a sign of life, `FlatWatch` (pure, given times) decides when to raise
`elderly.inactivity` and when to clear it, and `Wellness.run` (a gateway service)
emits those events through the same outbox and observers as a driver's.

After a (re)start the window begins at start time: the gateway does not remember the
last activity across restarts, so a restart delays an alarm by at most one window and
never raises a storm of stale ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from gateway.host import Host
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import (
    DeviceRef,
    Event,
    EventType,
    Message,
    Telemetry,
    Unit,
    ValueType,
    format_ts,
)
from gateway.wellness.settings import ActivityRules, InactivityCheck, WellnessConfig
from gateway.wellness.settings import activity_devices as _activity_devices

__all__ = ["Decision", "FlatWatch", "MeterMemory", "Wellness", "attach", "classify"]

log = logging.getLogger(__name__)

_MAX_SLEEP_S = 1.0

Emit = Callable[[Message], Awaitable[None]]


class MeterMemory:
    """The previous value of every water counter, to see it rise between two readings."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], float] = {}

    def rise_l(self, device_id: str, name: str, value: float) -> float | None:
        """Litres since the previous reading of this counter; None for the first one."""
        key = (device_id, name)
        before = self._last.get(key)
        self._last[key] = value
        return None if before is None else (value - before) * 1000.0


def classify(
    message: Message, rules: ActivityRules, meters: MeterMemory, *, own_device: bool
) -> bool:
    """True if `message` shows someone is active; `own_device`: it is the check's device."""
    if isinstance(message, Event):
        if own_device and message.type in rules.own_events:
            return True
        return message.type in rules.events
    active = False
    for r in message.readings:
        if isinstance(r.value, bool) or not isinstance(r.value, int | float):
            continue
        if r.unit is Unit.M3 and r.type is ValueType.COUNTER:
            rise = meters.rise_l(message.device.id, r.name, float(r.value))
            # Every counter is read, even after a hit, so each keeps its base current.
            active = active or (rise is not None and rise > rules.water_rise_l)
        elif r.unit is Unit.W and r.type is ValueType.GAUGE and r.value > rules.power_w:
            active = True
    return active


@dataclass(frozen=True, slots=True)
class Decision:
    """An event the watch decided: its type and data."""

    type: EventType
    data: dict[str, object]


class FlatWatch:
    """One flat's quiet period, on a monotonic clock given by the caller (seconds).

    Raises once per quiet period, and clears on the first activity after raising.
    """

    def __init__(self, window_s: float, start: float, start_wall: datetime) -> None:
        self.window_s = window_s
        self._last = start
        self._quiet_since = start_wall
        self._last_wall: datetime | None = None
        self._last_device: str | None = None
        self.raised = False

    @property
    def due(self) -> float | None:
        """When `tick` raises, or None while raised (the next raise needs activity first)."""
        return None if self.raised else self._last + self.window_s

    def activity(self, now: float, wall: datetime, device_id: str) -> Decision | None:
        """A sign of life: restarts the window; clears a raised inactivity."""
        self._last, self._quiet_since = now, wall
        self._last_wall, self._last_device = wall, device_id
        if not self.raised:
            return None
        self.raised = False
        return Decision(
            EventType.ELDERLY_CLEARED,
            {"clears": str(EventType.ELDERLY_INACTIVITY), "activity_device": device_id},
        )

    def tick(self, now: float) -> Decision | None:
        """`elderly.inactivity` once the window has passed without activity."""
        due = self.due
        if due is None or now < due:
            return None
        self.raised = True
        return Decision(
            EventType.ELDERLY_INACTIVITY,
            {
                "window_s": self.window_s,
                # None: nothing seen since the gateway started (`quiet_since`).
                "last_activity": None if self._last_wall is None else format_ts(self._last_wall),
                "last_device": self._last_device,
                "quiet_since": format_ts(self._quiet_since),
            },
        )


@dataclass(slots=True)
class _Flat:
    check: InactivityCheck
    ref: DeviceRef
    watch: FlatWatch
    members: frozenset[str]


class Wellness:
    """The inactivity checks of one gateway: an observer and a service of the runtime."""

    def __init__(
        self,
        cfg: WellnessConfig,
        devices: Sequence[DeviceSpec],
        emit: Emit,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._rules = cfg.activity
        self._emit = emit
        self._clock = clock
        self._wall = wall
        self._meters = MeterMemory()
        self._pending: asyncio.Queue[Event] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._flats: list[_Flat] = []
        # Every message of the gateway passes here: find its flats without a scan.
        self._by_device: dict[str, list[_Flat]] = {}
        self.set_devices(cfg, devices)
        self._own: set[str] = set()  # msg_ids this service emitted: not activity
        self.emitted = 0
        self.errors = 0

    def set_devices(self, cfg: WellnessConfig, devices: Sequence[DeviceSpec]) -> None:
        """Watch `cfg`'s checks over `devices` (at start, and after a remote change of devices).

        A check that stays (the same device and settings) keeps its quiet period, so a
        change elsewhere in the building neither delays nor repeats its alarm; its
        activity devices follow the new list (a sensor added to the flat counts).  A
        check that is gone (its device was removed) is dropped; if it had raised
        `elderly.inactivity`, an `elderly.cleared` says why, so no alarm stays active
        for a flat nobody watches any more.
        """
        by_id = {d.id: d for d in devices}
        old = {flat.check.device: flat for flat in self._flats}
        now, wall = self._clock(), self._wall()
        flats = []
        for check in cfg.checks:
            kept = old.pop(check.device, None)
            watch = kept.watch if kept is not None and kept.check == check else None
            if watch is None:
                watch = FlatWatch(check.seconds, now, wall)
            members = frozenset(_activity_devices(check, devices))
            flats.append(_Flat(check, by_id[check.device].ref, watch, members))
        for gone in old.values():
            log.info("inactivity check on %s dropped: its device was removed", gone.ref.id)
            if gone.watch.raised:
                data: dict[str, object] = {
                    "clears": str(EventType.ELDERLY_INACTIVITY),
                    "reason": "the inactivity check was removed with its device",
                }
                self._queue(gone, Decision(EventType.ELDERLY_CLEARED, data), wall)
        self._flats = flats
        self._by_device = {}
        for flat in flats:
            for member in flat.members:
                self._by_device.setdefault(member, []).append(flat)
        self._wake.set()

    def observe(self, message: Message) -> None:
        """Runs on every durable message; never blocks (events are emitted by `run`)."""
        if message.msg_id in self._own:
            self._own.discard(message.msg_id)
            return
        flats = self._by_device.get(message.device.id)
        if not flats:
            return
        now, wall = self._clock(), self._wall()
        # A meter's memory must see each reading once, so telemetry is classified once.
        meter_hit = isinstance(message, Telemetry) and classify(
            message, self._rules, self._meters, own_device=False
        )
        for flat in flats:
            if isinstance(message, Event):
                own = message.device.id == flat.ref.id
                hit = classify(message, self._rules, self._meters, own_device=own)
            else:
                hit = meter_hit
            if not hit:
                continue
            decision = flat.watch.activity(now, wall, message.device.id)
            if decision is not None:
                self._queue(flat, decision, wall)
        self._wake.set()

    def _queue(self, flat: _Flat, decision: Decision, wall: datetime) -> None:
        event = Event(flat.ref, wall, decision.type, decision.data)
        self._pending.put_nowait(event)

    async def run(self) -> None:
        """Raise and clear the checks' events until cancelled."""
        for flat in self._flats:
            log.info(
                "inactivity check on %s: %g s without activity of %s",
                flat.ref.id,
                flat.watch.window_s,
                ", ".join(sorted(flat.members)),
            )
        while True:
            now = self._clock()
            for flat in self._flats:
                decision = flat.watch.tick(now)
                if decision is not None:
                    self._queue(flat, decision, self._wall())
            while not self._pending.empty():
                await self._send(self._pending.get_nowait())
            dues = [d for f in self._flats if (d := f.watch.due) is not None]
            # Re-read the clock at least every second: the loop's own timer need not be
            # the clock the watches run on (a test's, or one that jumped).
            timeout = min([_MAX_SLEEP_S, *(max(0.0, d - self._clock()) for d in dues)])
            self._wake.clear()
            if not self._pending.empty():
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    async def _send(self, event: Event) -> None:
        self._own.add(event.msg_id)
        try:
            await self._emit(event)
        except Exception as exc:
            # The state stays decided: no storm of retries; the next change emits again.
            self._own.discard(event.msg_id)
            self.errors += 1
            log.error("inactivity check on %s: %s lost: %s", event.device.id, event.type, exc)
            return
        self.emitted += 1
        log.info("%s on %s: %s", event.type, event.device.id, event.data)


def attach(host: Host) -> Wellness:
    """The inactivity checks of `host`'s config, run as its observer and service."""
    wellness = Wellness(host.config.wellness, host.devices, partial(host.emit, source="wellness"))
    host.add_message_observer(wellness.observe)
    # The checks are read again with the devices: a remote change may remove a flat's
    # device and its check together (gateway.fleet.devicechange).
    host.add_devices_observer(lambda devices: wellness.set_devices(host.config.wellness, devices))
    host.add_service("wellness", wellness.run)
    return wellness
