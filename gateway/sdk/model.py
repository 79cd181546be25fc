"""Normalised messages: every reading and event a driver produces, in one envelope.

Drivers build `Telemetry` and `Event` values; `encode` turns one into the JSON the
platform receives, once the outbox has given it its sequence number.  The wire format
is documented in docs/mqtt-api.md and checked against gateway/schemas/*.json.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

__all__ = [
    "GATEWAY_STORAGE",
    "SCHEMA_VERSION",
    "ClockState",
    "DeviceRef",
    "Event",
    "EventType",
    "Identity",
    "Kind",
    "Location",
    "Message",
    "Priority",
    "Reading",
    "Telemetry",
    "Unit",
    "ValueType",
    "encode",
    "encode_gateway_event",
    "format_ts",
]

SCHEMA_VERSION = 1


class Kind(StrEnum):
    """The four device families the platform knows."""

    DOOR = "door"
    SMOKE = "smoke"
    METER = "meter"
    ELDERLY_ALARM = "elderly_alarm"


class Unit(StrEnum):
    """Canonical units; drivers convert to these before emitting."""

    KWH = "kWh"
    KVARH = "kvarh"
    W = "W"
    VAR = "var"
    VA = "VA"
    V = "V"
    A = "A"
    HZ = "Hz"
    M3 = "m³"
    M3_PER_H = "m³/h"
    CELSIUS = "°C"
    PERCENT = "%"
    SECOND = "s"
    NONE = ""  # dimensionless: power factor, counts, states


class ValueType(StrEnum):
    """A counter only grows (energy, volume); a gauge goes up and down."""

    COUNTER = "counter"
    GAUGE = "gauge"


class EventType(StrEnum):
    """Known event types.  Adding one here needs the same line in schemas/event.json."""

    DOOR_OPENED = "door.opened"
    DOOR_CLOSED = "door.closed"
    DOOR_FORCED = "door.forced"
    DOOR_HELD_OPEN = "door.held_open"
    DOOR_REQUEST_TO_EXIT = "door.request_to_exit"
    ACCESS_GRANTED = "access.granted"
    ACCESS_DENIED = "access.denied"
    ACCESS_CARD_READ = "access.card_read"
    ACCESS_KEYPAD = "access.keypad"
    SMOKE_ALARM = "smoke.alarm"
    SMOKE_CLEARED = "smoke.cleared"
    ELDERLY_SOS = "elderly.sos"
    ELDERLY_FALL = "elderly.fall"
    ELDERLY_INACTIVITY = "elderly.inactivity"
    ELDERLY_CLEARED = "elderly.cleared"
    METER_COUNTER_ANOMALY = "meter.counter_anomaly"
    DEVICE_FAULT = "device.fault"
    DEVICE_BATTERY_LOW = "device.battery_low"
    DEVICE_TAMPER = "device.tamper"
    ACTIVITY_MOTION = "activity.motion"


class Priority(IntEnum):
    """Outbox order under backlog: lower values are published first."""

    EVENT = 0
    TELEMETRY = 1


class ClockState(StrEnum):
    """Whether `ts` comes from a clock known to be synchronised (NTP) or not."""

    SYNCED = "synced"
    UNSYNCED = "unsynced"


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _check_id(what: str, value: str) -> None:
    # Ids become MQTT topic levels: no '/', '+', '#' or spaces, bounded length.
    if not _ID.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """Which site and gateway a message comes from."""

    site: str
    gateway: str

    def __post_init__(self) -> None:
        _check_id("site id", self.site)
        _check_id("gateway id", self.gateway)


@dataclass(frozen=True, slots=True)
class Location:
    """Where a device is: building, and optionally floor and unit (flat, room, lobby)."""

    building: str
    floor: str | None = None
    unit: str | None = None

    def as_dict(self) -> dict[str, str]:
        out = {"building": self.building}
        if self.floor is not None:
            out["floor"] = self.floor
        if self.unit is not None:
            out["unit"] = self.unit
        return out


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """The device a message is about, as the platform addresses it."""

    id: str
    kind: Kind
    location: Location

    def __post_init__(self) -> None:
        _check_id("device id", self.id)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": str(self.kind), "location": self.location.as_dict()}


@dataclass(frozen=True, slots=True)
class Reading:
    """One named value in canonical units."""

    name: str
    value: float | int | bool | str
    unit: Unit = Unit.NONE
    type: ValueType = ValueType.GAUGE

    def __post_init__(self) -> None:
        # NaN and infinity are not JSON; a meter returning them has a fault, not a value.
        if isinstance(self.value, float) and not math.isfinite(self.value):
            raise ValueError(f"reading {self.name!r} is {self.value}, not a finite number")

    def as_dict(self) -> dict[str, Any]:
        return {"value": self.value, "unit": str(self.unit), "type": str(self.type)}


# A random 64-bit prefix per process and a counter: unique like a uuid4, but without a
# getrandom() call per message, which showed in the profile at thousands of messages/s.
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count(1)


def _new_id() -> str:
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def _aware(ts: datetime) -> None:
    if ts.tzinfo is None:
        raise ValueError("message timestamps must be timezone-aware (UTC)")


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Readings of one device taken at one instant."""

    device: DeviceRef
    ts: datetime
    readings: tuple[Reading, ...]
    msg_id: str = field(default_factory=_new_id)

    priority = Priority.TELEMETRY
    channel = "telemetry"

    def __post_init__(self) -> None:
        _aware(self.ts)
        if not self.readings:
            raise ValueError(f"telemetry for {self.device.id} has no readings")
        names = [r.name for r in self.readings]
        if len(set(names)) != len(names):
            raise ValueError(f"telemetry for {self.device.id} repeats a reading name: {names}")

    def body(self) -> dict[str, Any]:
        return {"values": {r.name: r.as_dict() for r in self.readings}}


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a device: an alarm, a door, a fault."""

    device: DeviceRef
    ts: datetime
    type: EventType
    data: Mapping[str, Any] = field(default_factory=dict)
    msg_id: str = field(default_factory=_new_id)

    priority = Priority.EVENT
    channel = "events"

    def __post_init__(self) -> None:
        _aware(self.ts)

    def body(self) -> dict[str, Any]:
        return {"event": {"type": str(self.type), "data": dict(self.data)}}


Message = Telemetry | Event


GATEWAY_STORAGE = "gateway.storage"


def encode_gateway_event(
    event_type: str,
    data: Mapping[str, Any],
    identity: Identity,
    seq: int,
    clock: ClockState,
    ts: datetime,
    *,
    uptime_ms: int | None = None,
    boot_id: str | None = None,
) -> bytes:
    """An event of the gateway itself (no device), e.g. `gateway.storage`; schema gateway-event."""
    doc = _envelope(
        "community.gateway_event", _new_id(), seq, ts, clock, identity, uptime_ms, boot_id
    )
    doc["event"] = {"type": event_type, "data": dict(data)}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _envelope(
    schema: str,
    msg_id: str,
    seq: int,
    ts: datetime,
    clock: ClockState,
    identity: Identity,
    uptime_ms: int | None,
    boot_id: str | None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": {"name": schema, "version": SCHEMA_VERSION},
        "msg_id": msg_id,
        "seq": seq,
        "ts": format_ts(ts),
        "clock": str(clock),
        "site": identity.site,
        "gateway": identity.gateway,
    }
    if clock is ClockState.UNSYNCED:
        if uptime_ms is not None:
            doc["uptime_ms"] = uptime_ms
        if boot_id is not None:
            doc["boot_id"] = boot_id
    return doc


def format_ts(ts: datetime) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. 2026-11-26T23:58:21.123Z."""
    utc = ts.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def encode(
    msg: Message,
    identity: Identity,
    seq: int,
    clock: ClockState,
    *,
    uptime_ms: int | None = None,
    boot_id: str | None = None,
) -> bytes:
    """Serialise one message with its envelope.

    `uptime_ms` and `boot_id` are added while the clock is unsynchronised: the platform
    can place such messages in time once a synchronised message from the same boot
    arrives, instead of trusting a wall clock that may say 1970.
    """
    schema = "community.telemetry" if isinstance(msg, Telemetry) else "community.event"
    doc = _envelope(schema, msg.msg_id, seq, msg.ts, clock, identity, uptime_ms, boot_id)
    doc["device"] = msg.device.as_dict()
    doc.update(msg.body())
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
