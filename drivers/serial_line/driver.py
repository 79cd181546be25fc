"""The serial-line driver: one reader per receiver port, signals dispatched by code."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.serial_line.parser import Deduper, LineSplitter, Parser, Problem, ProblemKind, Signal
from drivers.serial_line.settings import SerialLineSettings, check_devices
from gateway.sdk.backoff import Backoff
from gateway.sdk.devicechecks import admit
from gateway.sdk.driver import DeviceSpec, Driver, DriverContext, DriverHealth
from gateway.sdk.model import Event
from gateway.sdk.serialport import LineSettings, PortError, SerialPort

__all__ = ["BACKOFF_MAX_S", "BACKOFF_MIN_S", "SerialLineDriver"]

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 60.0
# Unknown codes are logged once each; noise can invent many, so stop remembering at some point.
_MAX_REMEMBERED_CODES = 1000


@dataclass(slots=True)
class _Receiver:
    """One port, its profile, and the devices whose codes it hears."""

    path: str
    baud: int
    parser: Parser
    dedupe: Deduper
    owners: dict[str, DeviceSpec]
    splitter: LineSplitter = field(default_factory=LineSplitter)
    logged_problems: set[ProblemKind] = field(default_factory=set)
    logged_codes: set[str] = field(default_factory=set)
    online: bool = False


class SerialLineDriver(Driver):
    """Reads RF receivers that print one line per signal; emits alarm events per device."""

    def __init__(self, devices: Sequence[DeviceSpec], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self._receivers: list[_Receiver] = []
        self._stats = DriverHealth(devices_total=len(devices))
        self._counts: Counter[str] = Counter()

    async def run(self) -> None:
        specs, problems = admit("serial_line", self.devices.values(), check_devices, self.ctx)
        for problem in problems:
            self._error(problem.message)
        by_port: dict[str, list[DeviceSpec]] = defaultdict(list)
        for spec in specs:
            by_port[spec.settings_as(SerialLineSettings).port].append(spec)
        async with asyncio.TaskGroup() as group:
            for path, on_port in by_port.items():
                receiver = self._receiver(path, on_port)
                self._receivers.append(receiver)
                group.create_task(self._keep(receiver), name=f"serial_line {path}")
        await asyncio.Future()  # the contract: return only when cancelled

    def health(self) -> DriverHealth:
        s = self._stats
        s.devices_online = sum(len(r.owners) for r in self._receivers if r.online)
        s.extra = {
            key: self._counts[key]
            for key in (
                "lines",
                "events",
                "repeats",
                "unknown_code",
                "skipped_bytes",
                *map(str, ProblemKind),
            )
        }
        return s

    def _error(self, text: str) -> None:
        self._stats.errors += 1
        self._stats.last_error = text

    def _receiver(self, path: str, specs: list[DeviceSpec]) -> _Receiver:
        """The port's receiver, with the settings of its first device (all agree)."""
        first = specs[0].settings_as(SerialLineSettings)
        owners = {spec.settings_as(SerialLineSettings).code: spec for spec in specs}
        return _Receiver(
            path, first.line_baud, Parser(first.receiver), Deduper(first.window_s), owners
        )

    def _set_all(self, receiver: _Receiver, available: bool, reason: str = "") -> None:
        receiver.online = available
        for spec in receiver.owners.values():
            self.ctx.set_available(spec.id, available, reason)

    async def _keep(self, receiver: _Receiver) -> None:
        """Keep the port open: on loss mark its devices unavailable and retry with backoff."""
        backoff = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S, jitter=False)
        last_reason = ""
        while True:
            port = SerialPort(receiver.path, LineSettings(receiver.baud), unplugged="receiver")
            try:
                port.open()
                if last_reason:
                    self.ctx.logger.info("serial_line: %s is open again", receiver.path)
                last_reason = ""
                backoff.reset()
                self._set_all(receiver, True)
                receiver.splitter.reset()
                await self._read(receiver, port)
            except PortError as exc:
                reason = str(exc)
                self._error(reason)
                if reason != last_reason:
                    self.ctx.logger.warning("serial_line: %s; retrying", reason)
                    self._set_all(receiver, False, reason)
                last_reason = reason
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug must not end the receiver: its devices are alarms.
                self.ctx.logger.exception("serial_line: reader of %s failed", receiver.path)
                self._set_all(receiver, False, "internal error; see the gateway log")
            finally:
                port.close()
            await asyncio.sleep(backoff.next())

    async def _read(self, receiver: _Receiver, port: SerialPort) -> None:
        counted = 0
        while True:
            chunk = await port.read()
            if port.dropped > counted:  # the bounded buffer overflowed: count what it lost
                self._counts["skipped_bytes"] += port.dropped - counted
                counted = port.dropped
            for item in receiver.splitter.feed(chunk):
                if isinstance(item, Problem):
                    self._problem(receiver, item)
                    continue
                self._counts["lines"] += 1
                for parsed in receiver.parser.scan(item):
                    if isinstance(parsed, Problem):
                        self._problem(receiver, parsed)
                    else:
                        await self._signal(receiver, parsed)

    def _problem(self, receiver: _Receiver, problem: Problem) -> None:
        self._counts[str(problem.kind)] += 1
        self._counts["skipped_bytes"] += problem.skipped
        self._error(f"{receiver.path}: {problem.detail}")
        if problem.kind in receiver.logged_problems:
            self.ctx.logger.debug("serial_line %s: %s", receiver.path, problem.detail)
            return
        receiver.logged_problems.add(problem.kind)
        self.ctx.logger.warning(
            "serial_line %s: %s (%s; logged once, counted in health; "
            "check the baud rate and the profile)",
            receiver.path,
            problem.detail,
            problem.kind,
        )

    async def _signal(self, receiver: _Receiver, signal: Signal) -> None:
        spec = receiver.owners.get(signal.code)
        if spec is None:
            self._counts["unknown_code"] += 1
            if (
                signal.code not in receiver.logged_codes
                and len(receiver.logged_codes) < _MAX_REMEMBERED_CODES
            ):
                receiver.logged_codes.add(signal.code)
                self.ctx.logger.warning(
                    "serial_line %s: transmitter %s (%s) belongs to no device; "
                    'to use it, add a device with code: "%s"',
                    receiver.path,
                    signal.code,
                    signal.function or signal.event,
                    signal.code,
                )
            return
        if not receiver.dedupe.is_new(signal.code, signal.event, time.monotonic()):
            self._counts["repeats"] += 1
            return
        self._counts["events"] += 1
        data = {"code": signal.code, "signal": signal.function or str(signal.event)}
        await self.ctx.emit(Event(spec.ref, self.ctx.now(), signal.event, data))
