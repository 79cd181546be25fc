"""The Modbus driver's orchestration: one poller per bus, devices taking turns on it.

Each bus (a serial port or a TCP endpoint) has one `Link` and one task.  The task polls
whichever device is due first; a device's reads go out one after another, and a read
that gets no valid reply ends that device's turn, so a dead meter costs the bus one
timeout per attempt.  A device that keeps failing goes offline after `offline_after`
polls and is retried with a doubling delay, while the others keep their interval.

Messages are handed to the outbox by a short task per poll, in order per device, so
a slow disk never holds the bus: an event's `ctx.emit` waits for its commit
(telemetry's returns at once).  At stop, readings already polled are still handed over.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.sdk.devicechecks import admit
from gateway.sdk.driver import (
    DeviceSpec,
    Driver,
    DriverContext,
    DriverHealth,
    PointValue,
    ReadResult,
)
from gateway.sdk.model import Event, EventType, Message, Reading, Telemetry, ValueType
from gateway.sdk.pacing import Cadence, first_offsets

from .counters import CounterGuard, Verdict
from .decode import DataType
from .faults import DeviceHealth, Fault, FaultKind, LinkFault, Transition
from .link import Link, quiet_pymodbus
from .plan import DevicePlan, plan_device
from .points import Decoded, PointsDecoder, decode_points, raw_hex
from .profile import Emit, Point, Profile
from .settings import BusKey, ModbusSettings, check_devices

__all__ = ["ModbusDriver", "ReadOutcome", "read_device", "read_once"]


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    """What one pass over a device's reads got: values by read, and the faults met."""

    results: dict[int, list[int]]
    failed: dict[int, str]
    faults: tuple[Fault, ...]

    @property
    def got_data(self) -> bool:
        return bool(self.results)


async def read_device(link: Link, unit: int, plan: DevicePlan, timeout: float) -> ReadOutcome:
    """Perform a device's planned reads; stop at the first read without a valid reply.

    An exception response is a valid reply (the device is there): the other reads go on.
    """
    results: dict[int, list[int]] = {}
    failed: dict[int, str] = {}
    faults: list[Fault] = []
    for i, read in enumerate(plan.reads):
        try:
            results[i] = await link.read(read.table, unit, read.start, read.count, timeout)
        except LinkFault as exc:
            faults.append(exc.fault)
            failed[i] = exc.fault.detail
            if exc.fault.kind is not FaultKind.EXCEPTION:
                break
    return ReadOutcome(results, failed, tuple(faults))


def _resolution(point: Point) -> float:
    # One count of an integer register; floats carry their own fractions.
    return 0.0 if point.decode.is_float else abs(point.scale)


@dataclass(slots=True, eq=False)
class _Device:
    spec: DeviceSpec
    settings: ModbusSettings
    profile: Profile
    plan: DevicePlan
    decoder: PointsDecoder
    health: DeviceHealth
    guards: dict[str, CounterGuard]
    flags: dict[str, bool] = field(default_factory=dict)
    bad_points: dict[str, str] = field(default_factory=dict)  # logged until they decode again
    cadence: Cadence = field(default_factory=Cadence)
    emit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def of(cls, spec: DeviceSpec) -> _Device:
        s = spec.settings_as(ModbusSettings)
        prof = s.profile_model
        guards = {
            p.name: CounterGuard(p.max_rate, _resolution(p))
            for p in prof.points
            if p.type is ValueType.COUNTER and p.emit is Emit.TELEMETRY
        }
        plan = plan_device(prof.points, max_gap=s.gap, profile=prof)
        return cls(
            spec=spec,
            settings=s,
            profile=prof,
            plan=plan,
            decoder=PointsDecoder(prof.points, plan),
            health=DeviceHealth(s.offline_after, s.poll_interval_s, s.backoff_max_s),
            guards=guards,
        )

    @property
    def where(self) -> str:
        return f"{self.spec.id} (unit {self.settings.unit_id} on {self.settings.bus.describe()})"


class ModbusDriver(Driver):
    """Polls Modbus meters and panels; every bus is shared by its devices."""

    def __init__(self, devices: Sequence[DeviceSpec], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self._links: dict[BusKey, Link] = {}
        self._devs: list[_Device] = []
        self._pending: set[asyncio.Task[None]] = set()
        self._counts = {"polls": 0, "failed_polls": 0, "anomalies": 0, "point_errors": 0}
        self._errors = 0
        self._last_error = ""

    # ---- lifecycle -------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every bus until cancelled."""
        quiet_pymodbus()
        specs, _ = admit("modbus", self.devices.values(), check_devices, self.ctx)
        buses: dict[BusKey, list[_Device]] = {}
        for spec in specs:
            dev = _Device.of(spec)
            self._devs.append(dev)
            buses.setdefault(dev.settings.bus.key, []).append(dev)
        for key, devs in buses.items():
            self._links[key] = Link(devs[0].settings.bus, self.ctx.logger)
        # All at once now, then spread over the interval, across buses: 32 meters of
        # their own address each burst as much as 32 on one line (gateway.sdk.pacing).
        offsets = first_offsets([d.settings.poll_interval_s for d in self._devs])
        for dev, offset in zip(self._devs, offsets, strict=True):
            dev.cadence.phase = offset
        try:
            async with asyncio.TaskGroup() as tg:
                for key, devs in buses.items():
                    tg.create_task(self._poll_bus(self._links[key], devs), name=f"modbus {key}")
        finally:
            # Readings already polled are handed to the outbox, not thrown away: telemetry
            # hand-off does not wait, so this is quick; a stuck event commit is cut off.
            if self._pending:
                await asyncio.wait(set(self._pending), timeout=2.0)
            for task in self._pending:
                task.cancel()
            await asyncio.gather(*self._pending, return_exceptions=True)
            for link in self._links.values():
                await link.close()

    async def _poll_bus(self, link: Link, devs: list[_Device]) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for dev in devs:
            dev.cadence.due = start
        task = asyncio.current_task()
        while True:
            # Python 3.11's wait_for (inside pymodbus) drops a cancellation that arrives
            # with the reply, and a TaskGroup cancels its children only once: without
            # this check a busy bus would poll on after SIGTERM, forever.
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            dev = min(devs, key=lambda d: d.cadence.due)
            delay = dev.cadence.due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                ok = await self._poll(link, dev)
            except Exception as exc:  # a bug with one device must not stop the bus
                ok = False
                self._error(f"{dev.spec.id}: {exc!r}")
                if dev.health.first_time(f"bug:{type(exc).__name__}"):
                    self.ctx.logger.exception("modbus device %s: poll failed", dev.where)
            now = loop.time()
            if ok:
                # Keep the rhythm; after an overrun poll now, but never in a burst.
                dev.cadence.keep(dev.settings.poll_interval_s, now)
            else:
                dev.cadence.retry(dev.health.next_delay(), now)

    def _error(self, text: str) -> None:
        self._errors += 1
        self._last_error = text

    # ---- one poll --------------------------------------------------------------------

    async def _poll(self, link: Link, dev: _Device) -> bool:
        s = dev.settings
        self._counts["polls"] += 1
        outcome = await read_device(link, s.unit_id, dev.plan, s.bus.timeout_s)
        for fault in outcome.faults:
            self._error(f"{dev.spec.id}: {fault.detail}")
            # The link logs a port it cannot open once for all its devices.
            if fault.kind is not FaultKind.PORT and dev.health.first_time(fault.key):
                self.ctx.logger.warning(
                    "modbus device %s: %s; check: %s", dev.where, fault.detail, fault.hint
                )
        messages: list[Message] = []
        if not outcome.got_data:
            self._counts["failed_polls"] += 1
            if dev.health.failure() is Transition.OFFLINE:
                messages.append(self._went_offline(dev, outcome.faults[0]))
            self._send(dev, messages)
            return False
        if dev.health.success() is Transition.ONLINE:
            self.ctx.set_available(dev.spec.id, True)
        if not outcome.faults and dev.health.logged:
            dev.health.clear_logged()
            self.ctx.logger.info("modbus device %s: answering normally again", dev.where)
        decoded = dev.decoder.decode(outcome.results, outcome.failed)
        messages.extend(self._messages(dev, decoded))
        self._send(dev, messages)
        return True

    def _went_offline(self, dev: _Device, fault: Fault) -> Event:
        reason = f"{fault.detail} ({dev.health.failures} polls in a row)"
        self.ctx.set_available(dev.spec.id, False, reason)
        # A port fault was logged once for the whole bus; each meter only notes its state.
        level = logging.INFO if fault.kind is FaultKind.PORT else logging.WARNING
        self.ctx.logger.log(level, "modbus device %s is offline: %s", dev.where, reason)
        data: dict[str, Any] = {
            "fault": str(fault.kind),
            "detail": fault.detail,
            "hint": fault.hint,
            "failures": dev.health.failures,
        }
        if fault.code is not None:
            data["exception_code"] = fault.code
        return Event(dev.spec.ref, self.ctx.now(), EventType.DEVICE_FAULT, data)

    def _messages(self, dev: _Device, decoded: list[Decoded]) -> list[Message]:
        now = asyncio.get_running_loop().time()
        ts = self.ctx.now()
        ref = dev.spec.ref
        events: list[Message] = []
        readings: list[Reading] = []
        for d in decoded:
            p = d.point
            if d.value is None:
                if not d.read_failed and p.name not in dev.bad_points:
                    dev.bad_points[p.name] = d.error
                    self._counts["point_errors"] += 1
                    self.ctx.logger.warning(
                        "modbus device %s: point %s not published: %s; check the profile's "
                        "decode and order for it against the device manual",
                        dev.where,
                        p.name,
                        d.error,
                    )
                continue
            if dev.bad_points.pop(p.name, None) is not None:
                self.ctx.logger.info("modbus device %s: point %s decodes again", dev.where, p.name)
            if p.emit is Emit.EVENT:
                events.extend(self._edges(dev, p, bool(d.value), ts))
                continue
            value = d.value
            guard = dev.guards.get(p.name)
            if guard is not None and not isinstance(value, bool):
                verdict, anomaly = guard.check(float(value), now)
                if anomaly is not None:
                    self._counts["anomalies"] += 1
                    data = anomaly.as_data(p.name, str(p.unit))
                    events.append(Event(ref, ts, EventType.METER_COUNTER_ANOMALY, data))
                    self.ctx.logger.warning(
                        "modbus device %s: counter %s went from %s to %s (%s); not published",
                        dev.where,
                        p.name,
                        anomaly.old,
                        anomaly.new,
                        anomaly.reason,
                    )
                if verdict is Verdict.WITHHOLD:
                    continue
                if verdict is Verdict.ADOPT:
                    self.ctx.logger.info(
                        "modbus device %s: counter %s confirmed at its new level %s "
                        "(meter reset or replaced?); published again",
                        dev.where,
                        p.name,
                        value,
                    )
            readings.append(Reading(p.name, value, p.unit, p.type))
        messages = events
        if readings:
            messages.append(Telemetry(ref, ts, tuple(readings)))
        return messages

    def _edges(self, dev: _Device, p: Point, state: bool, ts: Any) -> list[Message]:
        before = dev.flags.get(p.name)
        dev.flags[p.name] = state
        # At start an input away from its normal state is reported (a restart must not
        # hide a fire); one in its normal state is not, there is nothing to clear.
        if before is None and state == p.normal:
            return []
        if before == state:
            return []
        event = p.on_true if state else p.on_false
        if event is None:
            return []
        data: dict[str, Any] = {"point": p.name, **p.data}
        return [Event(dev.spec.ref, ts, event, data)]

    def _send(self, dev: _Device, messages: list[Message]) -> None:
        if not messages:
            return
        task = asyncio.create_task(self._emit_in_order(dev, messages))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _emit_in_order(self, dev: _Device, messages: list[Message]) -> None:
        # asyncio.Lock wakes waiters in FIFO order: a device's polls reach the outbox in order.
        async with dev.emit_lock:
            for message in messages:
                try:
                    await self.ctx.emit(message)
                except Exception as exc:
                    self._error(f"{dev.spec.id}: emit failed: {exc!r}")
                    self.ctx.logger.exception("modbus device %s: emit failed", dev.spec.id)

    # ---- health ----------------------------------------------------------------------

    def health(self) -> DriverHealth:
        """Errors, devices online, and counters of polls, faults and anomalies."""
        extra: dict[str, float | int | str] = dict(self._counts)
        for name in ("requests", "no_response", "garbled", "exceptions", "port_errors"):
            extra[name] = sum(getattr(link.stats, name) for link in self._links.values())
        return DriverHealth(
            errors=self._errors,
            last_error=self._last_error,
            devices_online=sum(1 for d in self._devs if d.health.online),
            devices_total=len(self.devices),
            extra=extra,
        )


def _note(d: Decoded) -> str:
    p = d.point
    where = f"{p.table} {p.address} (0x{p.address:04X}) {p.decode}"
    if p.decode is DataType.BIT:
        where += f" bit {p.bit}"
    if d.error:
        return f"{where}: {d.error}"
    if p.emit is Emit.EVENT:
        return f"{where}, events {p.on_true or '-'} / {p.on_false or '-'}"
    return f"{where}, {p.type}"


async def read_once(spec: DeviceSpec) -> ReadResult:
    """What `gateway read DEVICE` shows: every point now, with raw registers, or the fault."""
    s = spec.settings_as(ModbusSettings)
    prof = s.profile_model
    plan = plan_device(prof.points, max_gap=s.gap, profile=prof)
    quiet_pymodbus()
    link = Link(s.bus, logging.getLogger("drivers.modbus"))
    try:
        outcome = await read_device(link, s.unit_id, plan, s.bus.timeout_s)
    finally:
        await link.close()
    if not outcome.got_data:
        fault = outcome.faults[0]
        return ReadResult(spec.id, fault=fault.detail, hint=fault.hint)
    decoded = decode_points(prof.points, plan, outcome.results, outcome.failed)
    points = tuple(
        PointValue(d.point.name, d.value, str(d.point.unit), raw_hex(d.point, d.raw), _note(d))
        for d in decoded
    )
    return ReadResult(spec.id, points)
