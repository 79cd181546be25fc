"""The driver contract: what a device family's folder under drivers/ provides.

A driver package exposes one `DriverInfo` object, registered as an entry point in the
`community_gateway.drivers` group.  The runtime validates every device's `driver:`
section with `DriverInfo.settings_model` before anything connects, then builds one
driver instance per driver type with all the devices of that type (a Modbus bus is
shared by many meters), and runs it as an asyncio task.

Rules a driver follows:
- `__init__` only assigns; all I/O happens in `run()`.
- `run()` streams messages with `ctx.emit(...)` and reports reachability with
  `ctx.set_available(...)`.  Emitting an event returns once it is durable in the
  outbox; emitting telemetry returns at once (a bounded hand-off: what cannot be
  queued is counted as dropped telemetry, with its seq), so a driver needs no task
  per reading to keep polling.
- A fault of one device must not stop the others; `run()` returns only when cancelled.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

from gateway.sdk.model import DeviceRef, Kind, Message

__all__ = [
    "CommandError",
    "DeviceCheck",
    "DeviceProblem",
    "DeviceSpec",
    "Driver",
    "DriverContext",
    "DriverHealth",
    "DriverInfo",
    "PointValue",
    "ReadResult",
    "SerialPortUse",
]


S = TypeVar("S", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One configured device, already validated, with its driver's own settings."""

    ref: DeviceRef
    settings: BaseModel
    driver: str
    name: str = ""

    @property
    def id(self) -> str:
        return self.ref.id

    @property
    def kind(self) -> Kind:
        return self.ref.kind

    def settings_as(self, model: type[S]) -> S:
        """The settings, typed as the driver's own model; TypeError for another driver's."""
        if not isinstance(self.settings, model):
            raise TypeError(
                f"device {self.id} has {type(self.settings).__name__}, not {model.__name__}"
            )
        return self.settings


class DriverContext(Protocol):
    """What the runtime offers a driver.  Nothing else of the runtime is reachable."""

    @property
    def logger(self) -> logging.Logger: ...

    def now(self) -> datetime:
        """Current UTC time, for message timestamps."""
        ...

    async def emit(self, message: Message) -> None:
        """Hand a message to the outbox: an event returns once committed, telemetry at once."""
        ...

    def set_available(self, device_id: str, available: bool | None, reason: str = "") -> None:
        """Report a device reachable or not; published retained on its availability topic.

        None is "unknown": the driver cannot tell yet (zigbee2mqtt has said nothing about
        the device since the gateway started); it neither raises nor clears an alarm.
        """
        ...


@dataclass(slots=True)
class DriverHealth:
    """Figures a driver reports for the gateway's health message."""

    errors: int = 0
    last_error: str = ""
    devices_online: int = 0
    devices_total: int = 0
    extra: dict[str, float | int | str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "last_error": self.last_error,
            "devices_online": self.devices_online,
            "devices_total": self.devices_total,
            **self.extra,
        }


class CommandError(Exception):
    """A device command was refused; the message goes back to the caller as is."""


class Driver(abc.ABC):
    """Base class of every driver instance."""

    def __init__(self, devices: Sequence[DeviceSpec], ctx: DriverContext) -> None:
        self.devices = {d.id: d for d in devices}
        self.ctx = ctx

    @abc.abstractmethod
    async def run(self) -> None:
        """Talk to the devices until cancelled, emitting messages through the context."""

    @abc.abstractmethod
    def health(self) -> DriverHealth:
        """Counters for the health topic; cheap, called from the event loop."""

    def observe(self, message: Message) -> None:
        """Another driver's message, now durable (e.g. a reader's grant for a door contact).

        Runs on the event loop and must not block.  Most drivers ignore it.
        """
        return None

    async def command(self, device_id: str, name: str, args: Mapping[str, Any]) -> Any:
        """Run a device command (for example a relay output).  Drivers without any refuse."""
        raise CommandError(f"driver of device {device_id!r} has no command {name!r}")


@dataclass(frozen=True, slots=True)
class PointValue:
    """One point of a one-off installer read: value, unit, and the raw bytes or registers."""

    name: str
    value: float | int | bool | str | None
    unit: str = ""
    raw: str = ""
    note: str = ""  # e.g. "counter went backwards", "exception 2: illegal data address"


@dataclass(frozen=True, slots=True)
class ReadResult:
    """What `gateway read DEVICE` prints: every point, or the exact fault and what to check."""

    device_id: str
    points: tuple[PointValue, ...] = ()
    fault: str = ""
    hint: str = ""

    @property
    def ok(self) -> bool:
        return not self.fault


DriverFactory = Callable[[Sequence[DeviceSpec], DriverContext], Driver]


@dataclass(frozen=True, slots=True)
class DeviceProblem:
    """A problem of one device that only shows against other devices (e.g. a shared bus).

    `path` is the key path inside the device's `driver:` section, so `gateway validate`
    can give the line.  `also` names the other devices the conflict makes unreliable
    (two meters at one address: either may answer), which a running gateway leaves
    unstarted too; a device whose own settings disagree with its bus names none.
    """

    device_id: str
    path: tuple[str | int, ...]
    message: str
    also: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SerialPortUse:
    """A serial port a device opens: its device path, and the key path naming it.

    `key` is the path inside the device's `driver:` section (("bus", "port")), so a
    conflict found on the port points at its line.
    """

    path: str
    key: tuple[str | int, ...]


# Config-time check across devices: (this driver's devices, every device) -> problems.
# Runs in `gateway validate` before anything connects.
DeviceCheck = Callable[[Sequence[DeviceSpec], Sequence[DeviceSpec]], list[DeviceProblem]]


@dataclass(frozen=True, slots=True)
class DriverInfo:
    """The entry-point object of a driver package."""

    name: str
    summary: str
    settings_model: type[BaseModel]
    factory: DriverFactory
    kinds: frozenset[Kind]
    folder: Path  # the driver's folder: README.md and sample.yaml live there
    # Installer read of one device, used by `gateway read` and `gateway check`.
    read_once: Callable[[DeviceSpec], Awaitable[ReadResult]] | None = None
    # A driver's click commands are entry points (community_gateway.commands and
    # community_gateway.scan in pyproject.toml), so listing them imports no driver.
    check_devices: DeviceCheck | None = None
    # Messages a second one device makes at its configured interval, for the storage
    # check of `gateway validate` (gateway/sdk/capacity.py); None: not on a schedule.
    message_rate: Callable[[DeviceSpec], float] | None = None
    # The serial ports a device opens (exclusively), for `gateway check` and for the
    # conflicts between drivers; None: the driver opens none.
    serial_ports: Callable[[DeviceSpec], Sequence[SerialPortUse]] | None = None

    def serial_ports_of(self, spec: DeviceSpec) -> Sequence[SerialPortUse]:
        """The serial ports `spec` opens; none for a driver without serial ports."""
        return () if self.serial_ports is None else self.serial_ports(spec)
