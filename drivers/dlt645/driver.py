"""The DL/T 645 driver: one task per serial bus, meters polled one request at a time."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.dlt645.link import SerialLink
from drivers.dlt645.poll import PollResult, fault_hint, poll_meter
from drivers.dlt645.settings import Dlt645Settings, check_devices
from drivers.dlt645.state import CounterGuard, MeterHealth, Transition
from gateway.sdk.devicechecks import admit
from gateway.sdk.driver import (
    DeviceSpec,
    Driver,
    DriverContext,
    DriverHealth,
    PointValue,
    ReadResult,
)
from gateway.sdk.model import Event, EventType, Reading, Telemetry, ValueType
from gateway.sdk.pacing import Cadence, first_offsets
from gateway.sdk.serialport import PortError

__all__ = ["Dlt645Driver", "read_once"]

# After an unexpected error in a bus task, wait before starting it again.
_RESTART_DELAY_S = 5.0


@dataclass(slots=True)
class _Meter:
    spec: DeviceSpec
    settings: Dlt645Settings
    health: MeterHealth
    guard: CounterGuard = field(default_factory=CounterGuard)
    cadence: Cadence = field(default_factory=Cadence)
    ever_answered: bool = False
    refused: set[str] = field(default_factory=set)  # readings already logged as refused


class Dlt645Driver(Driver):
    """Polls DL/T 645-2007 meters; every meter on a port shares one serialised link."""

    def __init__(self, devices: Sequence[DeviceSpec], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self._meters: dict[str, _Meter] = {}
        self._phases: dict[str, float] = {}  # added to each meter's first interval
        self._links: list[SerialLink] = []
        self._stats = DriverHealth(devices_total=len(devices))
        self._polls = 0
        self._timeouts = 0
        self._garbled = 0

    async def run(self) -> None:
        specs, problems = admit("dlt645", self.devices.values(), check_devices, self.ctx)
        for problem in problems:
            self._error(problem.message)
        by_port: dict[str, list[DeviceSpec]] = defaultdict(list)
        for spec in specs:
            by_port[spec.settings_as(Dlt645Settings).bus.port].append(spec)
        # All at once now, then spread over the interval, across buses (gateway.sdk.pacing).
        offsets = first_offsets([s.settings_as(Dlt645Settings).poll_interval_s for s in specs])
        self._phases = {spec.id: offset for spec, offset in zip(specs, offsets, strict=True)}
        async with asyncio.TaskGroup() as group:
            for port, specs in by_port.items():
                group.create_task(self._keep_bus(port, specs), name=f"dlt645 {port}")
        await asyncio.Future()  # the contract: return only when cancelled

    def health(self) -> DriverHealth:
        s = self._stats
        s.devices_online = sum(1 for m in self._meters.values() if m.health.online)
        s.extra = {
            "polls": self._polls,
            "timeouts": self._timeouts,
            "garbled": self._garbled,
            "noise_bytes": sum(link.noise_bytes for link in self._links),
        }
        return s

    def _error(self, text: str) -> None:
        self._stats.errors += 1
        self._stats.last_error = text

    async def _keep_bus(self, port: str, specs: list[DeviceSpec]) -> None:
        # A bug met on one bus must not stop the other buses nor end the driver.
        while True:
            try:
                await self._run_bus(port, specs)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.ctx.logger.exception("dlt645 bus %s failed; restarting it", port)
                await asyncio.sleep(_RESTART_DELAY_S)

    def _meters_of(self, specs: list[DeviceSpec]) -> list[_Meter]:
        """The bus's meters, kept across restarts of its task (their health goes on)."""
        meters = []
        for spec in specs:
            s = spec.settings_as(Dlt645Settings)
            meter = self._meters.get(spec.id) or _Meter(
                spec,
                s,
                MeterHealth(s.poll_interval_s, s.offline_after, s.backoff_max_s),
                # Due now, and the rhythm counted from now: from 0 (the monotonic
                # clock's epoch) the second poll came at once and the phase was lost.
                cadence=Cadence(time.monotonic(), self._phases.get(spec.id, 0.0)),
            )
            self._meters[spec.id] = meter
            meters.append(meter)
        return meters

    async def _run_bus(self, port: str, specs: list[DeviceSpec]) -> None:
        meters = self._meters_of(specs)
        link = SerialLink(meters[0].settings.bus, self.ctx.logger)
        self._links.append(link)
        open_error = ""
        try:
            while True:
                meter = min(meters, key=lambda m: m.cadence.due)
                await asyncio.sleep(max(0.0, meter.cadence.due - time.monotonic()))
                if not link.is_open:
                    try:
                        link.open()
                    except PortError as exc:
                        if str(exc) != open_error:
                            self.ctx.logger.warning("dlt645: %s", exc)
                            open_error = str(exc)
                        await self._failed(meter, str(exc))
                        continue
                    if open_error:
                        self.ctx.logger.info("dlt645: %s is open again", port)
                    open_error = ""
                try:
                    result = await poll_meter(link, meter.settings)
                except PortError as exc:
                    link.close()
                    await self._failed(meter, str(exc))
                    continue
                await self._handle(meter, result)
        finally:
            link.close()

    def _schedule(self, meter: _Meter) -> None:
        # Keep the cadence of a healthy meter; never schedule in the past after a slow poll.
        # The delay is the interval, or a failing meter's backoff (MeterHealth).
        meter.cadence.keep(meter.health.next_delay(), time.monotonic())

    async def _handle(self, meter: _Meter, result: PollResult) -> None:
        self._polls += 1
        self._timeouts += result.silent
        self._garbled += result.garbled
        if not result.answered:
            await self._failed(meter, result.failure, garbled=result.garbled > 0)
            return
        spec = meter.spec
        was_offline = meter.health.online is False
        meter.ever_answered = True
        if meter.health.succeeded() is Transition.ONLINE:
            self.ctx.set_available(spec.id, True)
            if was_offline:
                self.ctx.logger.info("dlt645 meter %s (%s) answers again", spec.id, result.address)
        if result.failure:
            self._error(f"{spec.id}: {result.failure}")
        self._log_refusals(meter, result)
        await self._publish(meter, result)
        self._schedule(meter)

    def _log_refusals(self, meter: _Meter, result: PollResult) -> None:
        for r in result.results:
            # A garbled or missing reply is the line's fault, counted in health; the next
            # poll asks again.  A refusal is the meter model's, logged once.
            if r.error.startswith(("meter refused", "bad value")):
                self._error(f"{meter.spec.id}: {r.error}")
                if r.item.name not in meter.refused:
                    meter.refused.add(r.item.name)
                    self.ctx.logger.warning(
                        "dlt645 meter %s: %s; check that this meter model has %s "
                        "(single-phase meters have no phase B or C)",
                        meter.spec.id,
                        r.error,
                        r.item.name,
                    )

    async def _publish(self, meter: _Meter, result: PollResult) -> None:
        spec = meter.spec
        now = self.ctx.now()
        readings: list[Reading] = []
        for value in result.values:
            item = value.item
            if item.type is ValueType.COUNTER:
                publish, anomaly = meter.guard.check(item.name, value.exact)
                if anomaly is not None:
                    self.ctx.logger.warning(
                        "dlt645 meter %s: counter %s went backwards from %s to %s; not published "
                        "(meter replaced or reset, or another meter at address %s?)",
                        spec.id,
                        item.name,
                        anomaly.previous,
                        anomaly.current,
                        result.address,
                    )
                    data = {
                        "reading": item.name,
                        "previous": float(anomaly.previous),
                        "current": float(anomaly.current),
                        "unit": str(item.canonical_unit),
                    }
                    await self.ctx.emit(Event(spec.ref, now, EventType.METER_COUNTER_ANOMALY, data))
                if not publish:
                    continue
            readings.append(Reading(item.name, value.canonical, item.canonical_unit, item.type))
        if readings:
            await self.ctx.emit(Telemetry(spec.ref, now, tuple(readings)))

    async def _failed(self, meter: _Meter, reason: str, *, garbled: bool = False) -> None:
        spec = meter.spec
        self._error(f"{spec.id}: {reason}")
        transition = meter.health.failed()
        self._schedule(meter)
        if transition is not Transition.OFFLINE:
            self.ctx.logger.debug("dlt645 meter %s: %s", spec.id, reason)
            return
        hint = fault_hint(meter.settings, meter.ever_answered, garbled=garbled)
        n = meter.health.failures
        self.ctx.logger.warning(
            "dlt645 meter %s (address %s) offline after %d failed polls: %s; %s",
            spec.id,
            meter.settings.address,
            n,
            reason,
            hint,
        )
        self.ctx.set_available(spec.id, False, reason)
        data = {"reason": reason, "check": hint, "failures": n, "address": meter.settings.address}
        await self.ctx.emit(Event(spec.ref, self.ctx.now(), EventType.DEVICE_FAULT, data))


async def read_once(spec: DeviceSpec) -> ReadResult:
    """Read every configured value of one meter once, for `gateway read`."""
    settings = spec.settings_as(Dlt645Settings)
    link = SerialLink(settings.bus, logging.getLogger(__name__))
    try:
        link.open()
    except PortError as exc:
        return ReadResult(
            spec.id,
            fault=str(exc),
            hint="check the port name (ls /dev/ttyUSB* /dev/ttyS*) and that no other program, "
            "such as the running gateway service, holds the port",
        )
    try:
        result = await poll_meter(link, settings)
    except PortError as exc:
        return ReadResult(
            spec.id, fault=str(exc), hint="check the USB/RS-485 adapter and its cable"
        )
    finally:
        link.close()
    if not result.answered:
        hint = fault_hint(settings, False, garbled=result.garbled > 0)
        return ReadResult(spec.id, fault=result.failure, hint=hint)
    points = []
    for r in result.results:
        unit = str(r.item.canonical_unit)
        if r.value is None:
            points.append(PointValue(r.item.name, None, unit, note=r.error))
            continue
        converted = r.item.unit != unit
        note = f"{r.value.exact} {r.item.unit} on the wire" if converted else ""
        points.append(
            PointValue(r.item.name, r.value.canonical, unit, raw=r.value.raw.hex(" "), note=note)
        )
    return ReadResult(spec.id, tuple(points))
