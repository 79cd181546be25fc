"""Normalised messages: every reading and event a driver produces, in one envelope.

Drivers build `Telemetry` and `Event` values; `encode` turns one into the JSON the
platform receives, once the outbox has given it its sequence number.  The wire format
is documented in docs/mqtt-api.md and checked against the protocol package's schemas
(protocol/community_protocol/schemas/*.json).
"""

from __future__ import annotations

import itertools
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum
from typing import Any

# The contract's enums and ids are the protocol package's; the driver kit re-exports
# them so that a driver imports its whole vocabulary from gateway.sdk.model.
from community_protocol.documents import dumps, envelope, format_ts
from community_protocol.enums import (
    ClockState,
    EventType,
    GatewayEventType,
    Kind,
    Unit,
    ValueType,
)
from community_protocol.ids import Identity, check_id
from community_protocol.names import SCHEMA_VERSION, SchemaName

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


class Priority(IntEnum):
    """Outbox order under backlog: lower values are published first."""

    EVENT = 0
    TELEMETRY = 1


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
        check_id("device id", self.id)

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


GATEWAY_STORAGE = str(GatewayEventType.STORAGE)


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
    doc = envelope(
        SchemaName.GATEWAY_EVENT,
        _new_id(),
        seq,
        ts,
        clock,
        identity,
        uptime_ms=uptime_ms,
        boot_id=boot_id,
    )
    doc["event"] = {"type": event_type, "data": dict(data)}
    return dumps(doc)


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
    name = SchemaName.TELEMETRY if isinstance(msg, Telemetry) else SchemaName.EVENT
    doc = envelope(
        name, msg.msg_id, seq, msg.ts, clock, identity, uptime_ms=uptime_ms, boot_id=boot_id
    )
    doc["device"] = msg.device.as_dict()
    doc.update(msg.body())
    return dumps(doc)
