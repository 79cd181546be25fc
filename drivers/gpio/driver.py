"""The GPIO driver's asyncio glue: one loop per chip turns edges into events.

Each chip gets one line request for all its inputs and relay outputs, and one loop that
waits for the next edge or the next deadline (a debounce settling, a door held open),
whichever comes first.  Relay commands write through the chip's current request.
Access grants of the readers a door contact names (`grant_from`) arrive through
`observe()`, from the other drivers' messages.  A chip that cannot be opened marks its devices unavailable, is logged
once, and is retried with backoff; the other chips go on.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from gateway.sdk.backoff import Backoff
from gateway.sdk.driver import (
    CommandError,
    DeviceSpec,
    Driver,
    DriverContext,
    DriverHealth,
    PointValue,
    ReadResult,
)
from gateway.sdk.model import Event, EventType, Message

from .contact import ROLE_EVENTS, Debouncer, active_level
from .door import DoorEvent, DoorLogic
from .relay import Relay, parse_command
from .settings import Contact, GpioSettings, Role
from .source import ChipUnavailable, Edge, EdgeSource, LineConfig, Opener, open_gpiod

__all__ = ["GpioDriver", "read_once"]

_NS = 1_000_000_000


@dataclass(slots=True)
class _Input:
    """One requested line: its device, meaning, wiring and debounce state."""

    spec: DeviceSpec
    offset: int
    role: Role
    contact: Contact
    active_level: int
    config: LineConfig
    door: DoorLogic | None
    debouncer: Debouncer | None = None
    known: bool | None = None  # last reported active state; kept across reconnects


def _inputs(spec: DeviceSpec) -> list[_Input]:
    s = spec.settings_as(GpioSettings)
    door = None
    if s.role is Role.DOOR_CONTACT:
        door = DoorLogic(grant_window_s=s.grant_window_s, held_open_s=s.held_open_s)
    config = LineConfig(s.bias, s.debounce_ms)
    level = active_level(s.contact, s.bias)
    out = [_Input(spec, s.line, s.role, s.contact, level, config, door)]
    if s.rex_line is not None:
        rex_level = active_level(s.rex_contact, s.bias)
        out.append(
            _Input(spec, s.rex_line, Role.REQUEST_TO_EXIT, s.rex_contact, rex_level, config, door)
        )
    return out


class GpioDriver(Driver):
    """Watches dry contacts on GPIO lines (door, smoke and SOS events) and drives relays."""

    def __init__(
        self,
        devices: Sequence[DeviceSpec],
        ctx: DriverContext,
        *,
        opener: Opener = open_gpiod,
        retry_min_s: float = 1.0,
        retry_max_s: float = 60.0,
    ) -> None:
        super().__init__(devices, ctx)
        self._opener = opener
        self._retry = (retry_min_s, retry_max_s)  # a Backoff per chip, without jitter
        self._online: dict[str, bool] = {}
        self._faults: dict[str, str] = {}  # chip -> its current fault, logged once
        self._connected: dict[str, bool] = {}  # chip -> its lines were read since the last fault
        self._doors: dict[str, DoorLogic] = {}
        self._relays: dict[str, Relay] = {}
        self._sources: dict[str, EdgeSource] = {}  # chip -> its request while it works
        self._grants: dict[str, list[str]] = {}  # reader id -> the doors it grants
        for spec in self.devices.values():
            s = spec.settings_as(GpioSettings)
            if s.role is Role.RELAY:
                self._relays[spec.id] = Relay(spec, s.chip, s.line, s.active)
            for reader in s.grant_from:
                self._grants.setdefault(reader, []).append(spec.id)
        self._errors = 0
        self._last_error = ""
        self._events = 0

    def grant(self, device_id: str) -> None:
        """An access grant from outside (e.g. a card reader): the next opening is not forced."""
        self._doors[device_id].grant(time.monotonic())

    def observe(self, message: Message) -> None:
        """A reader's `access.granted` grants the doors that name it in `grant_from`."""
        if not isinstance(message, Event) or message.type is not EventType.ACCESS_GRANTED:
            return
        for door in self._grants.get(message.device.id, ()):
            if door in self._doors:  # not started (a line clash): nothing to grant
                self.grant(door)

    async def command(self, device_id: str, name: str, args: Mapping[str, Any]) -> Any:
        """`on`, `off` and `pulse` (`seconds`, default 1) for a relay output."""
        relay = self._relays.get(device_id)
        if relay is None:
            raise CommandError(f"gpio device {device_id!r} is an input; only relays take commands")
        on, seconds = parse_command(device_id, name, args)
        self._switch(relay, on)
        if relay.pulse is not None:
            relay.pulse.cancel()
            relay.pulse = None
        if seconds is None:
            return {"state": "on" if on else "off"}
        relay.pulse = asyncio.create_task(self._pulse_off(relay, seconds))
        return {"state": "on", "off_after_s": seconds}

    def _switch(self, relay: Relay, on: bool) -> None:
        source = self._sources.get(relay.chip)
        if source is None:
            reason = self._faults.get(relay.chip, "its chip is not open yet")
            raise CommandError(f"relay {relay.spec.id} cannot switch: {reason}")
        try:
            source.write(relay.offset, relay.level(on))
        except ChipUnavailable as exc:
            raise CommandError(f"relay {relay.spec.id} cannot switch: {exc}") from exc
        relay.on = on
        self.ctx.logger.info("relay %s switched %s", relay.spec.id, "on" if on else "off")

    async def _pulse_off(self, relay: Relay, seconds: float) -> None:
        await asyncio.sleep(seconds)
        relay.pulse = None
        try:
            self._switch(relay, False)
        except CommandError as exc:
            # Requested again after the fault, the line starts off.
            relay.on = False
            self.ctx.logger.warning("end of pulse: %s", exc)

    def health(self) -> DriverHealth:
        return DriverHealth(
            errors=self._errors,
            last_error=self._last_error,
            devices_online=sum(self._online.values()),
            devices_total=len(self.devices),
            extra={"events": self._events, "relays_on": sum(r.on for r in self._relays.values())},
        )

    def _set_available(self, spec: DeviceSpec, available: bool, reason: str = "") -> None:
        self._online[spec.id] = available
        self.ctx.set_available(spec.id, available, reason)

    async def run(self) -> None:
        """Watch every chip's inputs and serve its relays until cancelled."""
        by_chip: defaultdict[str, dict[int, _Input]] = defaultdict(dict)
        relays: defaultdict[str, dict[int, Relay]] = defaultdict(dict)
        used: defaultdict[str, dict[int, str]] = defaultdict(dict)  # chip -> line -> device
        for spec in self.devices.values():
            self._online[spec.id] = False
            chip = spec.settings_as(GpioSettings).chip
            relay = self._relays.get(spec.id)
            inputs = _inputs(spec) if relay is None else []
            offsets = [i.offset for i in inputs] if relay is None else [relay.offset]
            clash = next((o for o in offsets if o in used[chip]), None)
            if clash is not None:
                reason = f"line {clash} of {chip} is already used by device {used[chip][clash]}"
                self.ctx.logger.error("gpio device %s not started: %s", spec.id, reason)
                self._set_available(spec, False, reason)
                continue
            used[chip].update((o, spec.id) for o in offsets)
            if relay is not None:
                relays[chip][relay.offset] = relay
            for i in inputs:
                by_chip[chip][i.offset] = i
                if i.door is not None:
                    self._doors[spec.id] = i.door
        try:
            if not used:  # every device refused; run() still returns only when cancelled
                await asyncio.Event().wait()
            async with asyncio.TaskGroup() as group:
                for chip in used:
                    group.create_task(self._chip_loop(chip, by_chip[chip], relays[chip]))
        finally:
            for relay in self._relays.values():
                if relay.pulse is not None:
                    relay.pulse.cancel()

    async def _chip_loop(
        self, chip: str, inputs: dict[int, _Input], relays: dict[int, Relay]
    ) -> None:
        specs = list(
            {
                **{i.spec.id: i.spec for i in inputs.values()},
                **{r.spec.id: r.spec for r in relays.values()},
            }.values()
        )
        backoff = Backoff(*self._retry, jitter=False)
        while True:
            try:
                # Relays are requested at the state last commanded (off at first).
                lines = {o: i.config for o, i in inputs.items()}
                lines.update((o, r.config) for o, r in relays.items())
                source = self._opener(chip, lines)
                try:
                    await self._serve(chip, source, inputs, specs)
                finally:
                    self._sources.pop(chip, None)
                    source.close()
            except ChipUnavailable as exc:
                self._fault(chip, specs, str(exc))
            except Exception as exc:  # one chip's bug must not stop the others
                self._fault(chip, specs, f"{chip}: {type(exc).__name__}: {exc}")
            if self._connected.pop(chip, False):
                backoff.reset()  # it worked until now: a fresh fault, retry soon
            await asyncio.sleep(backoff.next())

    def _fault(self, chip: str, specs: list[DeviceSpec], reason: str) -> None:
        self._errors += 1
        self._last_error = reason
        for spec in specs:
            self._set_available(spec, False, reason)
        # Once per distinct fault: retried every minute, it would fill the log.
        if self._faults.get(chip) != reason:
            self._faults[chip] = reason
            self.ctx.logger.warning("gpio lines on %s unavailable, retrying: %s", chip, reason)

    async def _serve(
        self, chip: str, source: EdgeSource, inputs: dict[int, _Input], specs: list[DeviceSpec]
    ) -> None:
        now = time.monotonic_ns()
        for i in inputs.values():
            level = source.read(i.offset)
            i.debouncer = Debouncer(level, i.config.debounce_ms * 1_000_000)
            await self._baseline(i, level == i.active_level, now)
        self._sources[chip] = source
        if self._faults.pop(chip, None) is not None:
            self.ctx.logger.info("gpio lines on %s work again", chip)
        for spec in specs:
            self._set_available(spec, True)
        self._connected[chip] = True

        queue: asyncio.Queue[Edge | Exception] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for edge in source:
                    queue.put_nowait(edge)
                queue.put_nowait(ChipUnavailable(f"{chip}: the edge stream ended"))
            except Exception as exc:
                queue.put_nowait(exc)

        reader = asyncio.create_task(pump())
        try:
            while True:
                deadline = self._deadline(inputs)
                timeout = (
                    None if deadline is None else max(0.0, (deadline - time.monotonic_ns()) / _NS)
                )
                try:
                    async with asyncio.timeout(timeout):
                        item = await queue.get()
                except TimeoutError:
                    pass
                else:
                    if isinstance(item, Exception):
                        raise item
                    offset, level, ts = item
                    target = inputs.get(offset)
                    if target is not None and target.debouncer is not None:
                        target.debouncer.feed(ts, level)
                await self._settle(inputs, time.monotonic_ns())
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    @staticmethod
    def _deadline(inputs: dict[int, _Input]) -> int | None:
        dues: list[int] = []
        for i in inputs.values():
            if i.debouncer is not None and i.debouncer.due is not None:
                dues.append(i.debouncer.due)
            if i.door is not None and i.role is Role.DOOR_CONTACT and i.door.due is not None:
                dues.append(int(i.door.due * _NS))
        return min(dues, default=None)

    async def _settle(self, inputs: dict[int, _Input], now: int) -> None:
        for i in inputs.values():
            settled = i.debouncer.settle(now) if i.debouncer is not None else None
            if settled is not None:
                level, since = settled
                await self._change(i, level == i.active_level, since)
            if i.door is not None and i.role is Role.DOOR_CONTACT:
                await self._emit(i.spec, i.door.tick(now / _NS))

    async def _baseline(self, i: _Input, active: bool, now: int) -> None:
        """Take the level found on (re)connecting: silent at first, a change after."""
        if i.known is None:
            if i.role is Role.DOOR_CONTACT and i.door is not None:
                i.door.start(active, now / _NS)
                i.known = active
                return
            # A smoke relay already in alarm at boot is an alarm; a held button is not a press.
            i.known = False if i.role is Role.SMOKE_RELAY else active
        if active != i.known:
            await self._change(i, active, now)

    async def _change(self, i: _Input, active: bool, ts_ns: int) -> None:
        i.known = active
        ts = ts_ns / _NS
        if i.door is not None:
            if i.role is Role.DOOR_CONTACT:
                await self._emit(i.spec, i.door.opened(ts) if active else i.door.closed(ts))
            elif active:
                await self._emit(i.spec, i.door.request_to_exit(ts))
            return
        events = ROLE_EVENTS[i.role]
        kind = events.on_active if active else events.on_inactive
        if kind is not None:
            await self._emit(i.spec, [DoorEvent(ts, kind, {"input": str(i.role)})])

    async def _emit(self, spec: DeviceSpec, events: list[DoorEvent]) -> None:
        for e in events:
            # Kernel timestamps are monotonic; the message carries wall time of the edge.
            age = max(0.0, time.monotonic() - e.ts)
            wall = self.ctx.now() - timedelta(seconds=age)
            try:
                await self.ctx.emit(Event(spec.ref, wall, EventType(e.type), dict(e.data)))
            except Exception as exc:
                # The outbox refusing one event is no reason to drop the chip and its lines.
                self._errors += 1
                self._last_error = f"{spec.id}: {exc}"
                self.ctx.logger.error("gpio device %s: %s lost: %s", spec.id, e.type, exc)
                continue
            self._events += 1


def _describe(role: Role, active: bool) -> str:
    return {
        Role.DOOR_CONTACT: ("closed", "open"),
        Role.REQUEST_TO_EXIT: ("released", "pressed"),
        Role.SMOKE_RELAY: ("normal", "alarm"),
        Role.SOS_BUTTON: ("released", "pressed"),
        Role.PULL_CORD: ("released", "pulled"),
        Role.RELAY: ("off", "on"),
    }[role][active]


async def read_once(spec: DeviceSpec, opener: Opener = open_gpiod) -> ReadResult:
    """Read the device's inputs once, for `gateway read`: what each line says now."""
    s = spec.settings_as(GpioSettings)
    if s.role is Role.RELAY:
        return ReadResult(
            spec.id,
            fault="a relay output is not read: requesting its line would switch it",
            hint="switch it with the device commands on, off and pulse",
        )
    inputs = _inputs(spec)
    try:
        source = opener(s.chip, {i.offset: i.config for i in inputs})
    except ChipUnavailable as exc:
        return ReadResult(spec.id, fault=str(exc), hint="check the chip path with `gpiodetect`")
    try:
        points = []
        for i in inputs:
            level = source.read(i.offset)
            points.append(
                PointValue(
                    str(i.role),
                    _describe(i.role, level == i.active_level),
                    raw=f"line {i.offset} level {level}",
                    note=f"contact {i.contact}, bias {s.bias}",
                )
            )
        return ReadResult(spec.id, tuple(points))
    except ChipUnavailable as exc:
        return ReadResult(spec.id, fault=str(exc))
    finally:
        source.close()
