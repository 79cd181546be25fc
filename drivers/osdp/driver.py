"""The OSDP driver's asyncio glue: one control panel per bus, readers as door devices.

Each bus (serial port) gets one `Bus` (libosdp ControlPanel and its thread) and one
loop here that takes libosdp's events from a queue, polls which readers are online,
and turns card reads, keypad entries and tamper reports into events.  A reader that
goes offline is marked unavailable with the reason, logged once, and tried again with
backoff (libosdp alone would wait 300 s); the other readers on the bus go on.  A port
that fails closes the bus, marks its readers offline and is reopened with backoff.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import osdp

from gateway.sdk.driver import DeviceSpec, Driver, DriverContext, DriverHealth
from gateway.sdk.model import Event, EventType

from .allowlist import AllowList
from .bus import Bus, BusError, PdConfig, Queued, answered, thread_safe_sink
from .events import (
    CardRead,
    KeyPress,
    Notification,
    NotificationType,
    OsdpEventError,
    StatusReport,
    card_data,
    parse_event,
)
from .keypad import KeypadBuffer, KeypadEntry
from .pseudonym import pin_pseudonym
from .reader import Reader, describe_offline, feedback_commands, key_refused, retry_backoff
from .settings import (
    OsdpSettings,
    SecretError,
    SecureChannel,
    read_scbk,
    read_site_secret,
)

__all__ = ["OsdpDriver"]

_TICK_S = 0.1
_FIRST_CONTACT_S = 15.0  # libosdp probes about 8 s before it calls a silent reader offline


class OsdpDriver(Driver):
    """Control panel for OSDP card readers: card, keypad and tamper events per reader."""

    def __init__(self, devices: Sequence[DeviceSpec], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self._readers: dict[str, Reader] = {}
        self._faults: dict[str, str] = {}  # device or port -> the fault logged last
        self._errors = 0
        self._last_error = ""
        self._counts: defaultdict[str, int] = defaultdict(int)

    def health(self) -> DriverHealth:
        return DriverHealth(
            errors=self._errors,
            last_error=self._last_error,
            devices_online=sum(1 for r in self._readers.values() if r.online),
            devices_total=len(self.devices),
            extra=dict(self._counts),
        )

    # -- reachability -------------------------------------------------------------------

    def _error(self, key: str, message: str, *, level: str = "warning") -> None:
        """Count a fault; log it only when it differs from the last one of `key`."""
        self._errors += 1
        self._last_error = message
        if self._faults.get(key) != message:
            self._faults[key] = message
            getattr(self.ctx.logger, level)("osdp %s", message)

    def _offline(self, r: Reader, reason: str, now: float, *, log: bool = True) -> None:
        was = r.online
        r.online, r.sc_active, r.reason = False, False, reason
        self.ctx.set_available(r.spec.id, False, reason)
        if log and (was is not False or self._faults.get(r.spec.id) != reason):
            self._error(r.spec.id, f"device {r.spec.id} offline: {reason}")
        elif not log:  # said once for the whole bus
            self._faults[r.spec.id] = f"device {r.spec.id} offline: {reason}"
        if r.retry_at is None:
            r.retry_at = now + r.retry.delay

    async def _online(self, bus: Bus, r: Reader, sc: bool) -> None:
        r.online, r.sc_active, r.sc_failed, r.reason = True, sc, False, ""
        r.retry_at = None
        r.retry.reset()
        self.ctx.set_available(r.spec.id, True)
        if self._faults.pop(r.spec.id, None) is not None:
            self.ctx.logger.info("osdp device %s online again", r.spec.id)
        else:
            self.ctx.logger.info(
                "osdp device %s online (secure channel %s)", r.spec.id, "on" if sc else "off"
            )
        if r.settings.secure_channel is SecureChannel.INSTALL and sc:
            self.ctx.logger.warning(
                "osdp device %s: the reader now holds the SCBK; set secure_channel: scbk", r.spec.id
            )
        try:
            led = await asyncio.to_thread(bus.capability, r.address, osdp.Capability.LEDControl)
            buzzer = await asyncio.to_thread(
                bus.capability, r.address, osdp.Capability.AudibleControl
            )
        except Exception as exc:  # a capability query is a nicety, never a reason to stop
            self._error(r.spec.id + ":caps", f"device {r.spec.id}: capabilities unknown: {exc}")
            led = buzzer = (0, 0)
        r.caps = {"led": led[0] > 0 and led[1] > 0, "buzzer": buzzer[0] > 0 and buzzer[1] > 0}

    # -- run ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve every bus until cancelled."""
        by_port: defaultdict[str, list[Reader]] = defaultdict(list)
        for spec in self.devices.values():
            s = spec.settings_as(OsdpSettings)
            try:
                secret = read_site_secret(s.site_secret)
                scbk = read_scbk(s.scbk) if s.scbk is not None else None
            except SecretError as exc:
                reason = f"not started: {exc}"
                self._error(spec.id, f"device {spec.id} {reason}", level="error")
                self.ctx.set_available(spec.id, False, reason)
                continue
            r = Reader(
                spec=spec,
                settings=s,
                secret=secret,
                scbk=scbk,
                keypad=KeypadBuffer(s.keypad_timeout_s, s.keypad_max_digits),
                allow=AllowList(s.allow_list) if s.allow_list is not None else None,
                retry=retry_backoff(s.retry_s),
            )
            if r.allow is not None:
                for problem in r.allow.refresh():
                    self._error(spec.id + ":allow", problem)
            self._readers[spec.id] = r
            by_port[s.port].append(r)
        if not by_port:
            await asyncio.Event().wait()
        async with asyncio.TaskGroup() as group:
            for port, readers in by_port.items():
                group.create_task(self._bus_loop(port, readers))

    async def _bus_loop(self, port: str, readers: list[Reader]) -> None:
        baud = readers[0].settings.baudrate
        pds = [
            PdConfig(
                r.address, r.scbk, r.settings.secure_channel is SecureChannel.INSTALL, r.spec.id
            )
            for r in readers
        ]
        backoff = retry_backoff(min(r.settings.retry_s for r in readers))
        loop = asyncio.get_running_loop()
        while True:
            queue: asyncio.Queue[Queued] = asyncio.Queue()
            bus = Bus(port, baud, pds, thread_safe_sink(loop, queue))
            served = False
            try:
                await asyncio.to_thread(bus.start)
                if self._faults.pop(port, None) is not None:
                    self.ctx.logger.info("osdp bus %s open again", port)
                served = True
                await self._serve(bus, readers, queue)
            except BusError as exc:
                self._counts["bus_faults"] += 1
                ids = ", ".join(r.spec.id for r in readers)
                self._error(port, f"serial port {port}: {exc} (readers offline: {ids}); retrying")
                now = time.monotonic()
                for r in readers:
                    self._offline(r, f"serial port {port}: {exc}", now, log=False)
            except Exception as exc:  # one bus's bug must not stop the other buses
                self._counts["bus_faults"] += 1
                why = f"{type(exc).__name__}: {exc}"
                self._error(port, f"bus {port} restarted after an error: {why}", level="error")
                now = time.monotonic()
                for r in readers:
                    self._offline(r, f"bus {port} restarting after an error: {why}", now, log=False)
            finally:
                await asyncio.to_thread(bus.close)
            if served:
                backoff.reset()
            await asyncio.sleep(backoff.next())

    async def _serve(self, bus: Bus, readers: list[Reader], queue: asyncio.Queue[Queued]) -> None:
        by_address = {r.address: r for r in readers}
        now = time.monotonic()
        for r in readers:
            r.online, r.sc_failed, r.started, r.retry_at = None, False, now, None
            r.attempt = now
        next_poll = 0.0
        while True:
            try:
                async with asyncio.timeout(_TICK_S):
                    address, raw, ts = await queue.get()
            except TimeoutError:
                pass
            else:
                target = by_address.get(address)
                if target is not None:
                    await self._on_event(bus, target, raw, ts)
            now = time.monotonic()
            if bus.channel is not None and bus.channel.error:
                raise BusError(f"{bus.channel.error} (adapter unplugged or port gone?)")
            if now >= next_poll:
                next_poll = now + 0.25
                await self._poll(bus, readers, now)
            for r in readers:
                for entry in r.keypad.expire(now):
                    await self._keypad(r, entry)

    async def _poll(self, bus: Bus, readers: list[Reader], now: float) -> None:
        states = await asyncio.to_thread(bus.online)
        for r in readers:
            online, sc = states.get(r.address, (False, False))
            if online and r.online is not True:
                await self._online(bus, r, sc)
            elif (not online and r.online is True) or (
                r.online is None and now - r.started > _FIRST_CONTACT_S
            ):
                self._offline(r, describe_offline(r), now)
            if r.online is False and r.retry_at is not None and now >= r.retry_at:
                self._counts["retries"] += 1
                r.retry.next()  # one more failed retry: the next one waits twice as long
                r.retry_at = now + r.retry.delay
                r.sc_failed = False
                await asyncio.to_thread(bus.reset, r.address)
                r.quiet_until = r.attempt = time.monotonic()

    # -- events -------------------------------------------------------------------------

    async def _on_event(self, bus: Bus, r: Reader, raw: dict[str, Any], ts: float) -> None:
        try:
            event = parse_event(raw)
        except OsdpEventError as exc:
            self._counts["unknown_events"] += 1
            # The dict may hold card bytes: log its kind and keys, never its values.
            keys = ",".join(sorted(str(k) for k in raw))
            self._error(
                f"{r.spec.id}:event:{exc}",
                f"device {r.spec.id}: reply skipped: {exc} (keys {keys})",
            )
            return
        if isinstance(event, Notification):
            if ts <= r.quiet_until:
                return
            if key_refused(event, r.settings, ts, r.attempt) and r.online is not True:
                # Fast is not enough: on a busy line libosdp drops a silent reader as fast
                # for another reader's late reply ("Invalid pd address"). A refused key
                # comes from a reader that answered the ID request; a silent one has none.
                r.sc_failed = await asyncio.to_thread(answered, bus, r.address)
            elif (
                event.type is NotificationType.PD_STATUS
                and event.arg0 == 0
                and (r.online is not False or (r.sc_failed and "secure" not in r.reason))
            ):
                self._offline(r, describe_offline(r), time.monotonic())
            return
        if isinstance(event, CardRead):
            await self._card(bus, r, event)
        elif isinstance(event, KeyPress):
            r.keypad_reader_no = event.reader_no
            for entry in r.keypad.feed(event.keys, time.monotonic()):
                await self._keypad(r, entry)
        elif isinstance(event, StatusReport):
            if event.tamper and not r.tamper:
                source = "remote" if event.remote else "reader"
                await self._emit(r, EventType.DEVICE_TAMPER, {"tamper": True, "source": source})
                self._counts["tamper"] += 1
            elif r.tamper and not event.tamper:
                self.ctx.logger.info("osdp device %s: tamper cleared", r.spec.id)
            r.tamper = event.tamper

    async def _card(self, bus: Bus, r: Reader, read: CardRead) -> None:
        self._counts["cards"] += 1
        data = card_data(read, r.secret, publish_raw=r.settings.publish_raw_card)
        feedback: asyncio.Task[None] | None = None
        if r.allow is None:
            kind = EventType.ACCESS_CARD_READ
        else:
            for problem in r.allow.refresh():
                self._error(r.spec.id + ":allow", problem)
            granted = r.allow.allows(data["card"])
            kind = EventType.ACCESS_GRANTED if granted else EventType.ACCESS_DENIED
            data["decision"] = "allow_list"
            # LED and buzzer take ~120 ms of OSDP round trips: run them beside the emit,
            # not before it, so the grant reaches the door contact and the platform at once.
            feedback = asyncio.create_task(self._feedback(bus, r, granted, read.reader_no))
        self.ctx.logger.debug(
            "osdp device %s: %s %s (%d bits)", r.spec.id, kind, data["card"], read.bits
        )
        try:
            await self._emit(r, kind, data)
        finally:
            if feedback is not None:
                await feedback

    async def _keypad(self, r: Reader, entry: KeypadEntry) -> None:
        self._counts["keypad"] += 1
        data: dict[str, Any] = {
            "pin": pin_pseudonym(r.secret, entry.digits),
            "length": len(entry.digits),
            "ended": str(entry.ended),
            "reader_no": r.keypad_reader_no,
        }
        if r.settings.publish_raw_pin:
            data["pin_raw"] = entry.digits
        await self._emit(r, EventType.ACCESS_KEYPAD, data)

    async def _feedback(self, bus: Bus, r: Reader, granted: bool, reader_no: int) -> None:
        for command in feedback_commands(r.settings.feedback, r.caps, granted, reader_no):
            try:
                ok = await asyncio.to_thread(bus.submit, r.address, command)
            except Exception as exc:
                ok, why = False, str(exc)
            else:
                why = "libosdp refused the command"
            if not ok:
                self._error(r.spec.id + ":feedback", f"device {r.spec.id}: feedback lost: {why}")
            else:
                self._counts["feedback"] += 1

    async def _emit(self, r: Reader, kind: EventType, data: dict[str, Any]) -> None:
        try:
            await self.ctx.emit(Event(r.spec.ref, self.ctx.now(), kind, data))
        except Exception as exc:
            # The outbox refusing one event is no reason to drop the bus and its readers.
            self._error(
                r.spec.id + ":emit", f"device {r.spec.id}: {kind} lost: {exc}", level="error"
            )
            return
        self._counts["events"] += 1
