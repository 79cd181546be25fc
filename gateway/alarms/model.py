"""One alarm's state, its stored record, and the document published for it (schema alarm.json).

An alarm's timestamps come from the wall clock (for people); its timers are deadlines on
the engine's run clock (gateway.sdk.clock.RunClock), which NTP steps never move.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from typing import Any

from community_protocol.enums import AckVia, AlarmState, AlarmType, Severity
from community_protocol.names import SchemaName, schema_ref
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import ClockState, DeviceRef, Identity, format_ts

__all__ = [
    "Ack",
    "Alarm",
    "AlarmState",
    "Change",
    "DeviceInfo",
    "Devices",
    "Instant",
    "Via",
    "parse_ts",
]


# Where an acknowledgement came from (the alarm document's `ack.via`).
Via = AckVia


@dataclass(frozen=True, slots=True)
class Instant:
    """One moment on both clocks: `wall` stamps documents, `run` (seconds) drives timers.

    `synced` says whether the wall clock was known to be right (gateway.sdk.clock.Clock).
    """

    wall: datetime
    run: float
    synced: bool = True


def parse_ts(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """The device an alarm is about, as people read it: copied into the alarm when raised."""

    id: str
    kind: str
    name: str
    location: dict[str, str]

    @classmethod
    def of(cls, ref: DeviceRef, name: str = "") -> DeviceInfo:
        return cls(ref.id, str(ref.kind), name, ref.location.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "name": self.name,
            "location": dict(self.location),
        }


class Devices(Mapping[str, DeviceInfo]):
    """The site's devices by id, each as a `DeviceInfo` made when an alarm asks for it.

    Alarms are raised by few of a site's devices: a copy of every one made in advance
    (its location as a dict) cost 0.25 KB a device, 0.12 MB of the 500-device RSS
    (issue 16).
    """

    __slots__ = ("_refs",)

    def __init__(self, specs: Iterable[DeviceSpec]) -> None:
        self._refs = {s.id: (s.ref, s.name) for s in specs}

    def __getitem__(self, device_id: str) -> DeviceInfo:
        ref, name = self._refs[device_id]
        return DeviceInfo.of(ref, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)


@dataclass(frozen=True, slots=True)
class Ack:
    """Who acknowledged an alarm, when, how, with what note."""

    by: str
    note: str
    at: datetime
    via: Via

    def as_dict(self) -> dict[str, Any]:
        return {"by": self.by, "note": self.note, "at": format_ts(self.at), "via": str(self.via)}


@dataclass(slots=True)
class Alarm:
    """A mutable alarm inside the engine; `Change.alarm` holds frozen-in-time copies."""

    id: str
    type: AlarmType
    severity: Severity
    device: DeviceInfo
    cause: str
    rule: str
    raised_at: datetime
    updated_at: datetime
    last_seen_at: datetime
    rev: int = 1
    state: AlarmState = AlarmState.ACTIVE
    count: int = 1
    escalation: int = 0
    ack: Ack | None = None
    cleared_at: datetime | None = None
    closed_at: datetime | None = None
    # False once any of its timestamps was taken while the wall clock was not synced.
    synced: bool = True
    # Timers, stored so that a restart keeps them (not published): run-clock seconds.
    escalate_due: float | None = None
    clear_due: float | None = None  # a clear signal waiting out the damping time
    clear_signal_at: datetime | None = None  # wall time of that clear signal

    @property
    def key(self) -> tuple[str, str]:
        return (self.device.id, str(self.type))

    @property
    def is_open(self) -> bool:
        return self.state is not AlarmState.CLOSED

    def copy(self) -> Alarm:
        return replace(self)

    def document(self, identity: Identity) -> dict[str, Any]:
        """The published document (protocol/community_protocol/schemas/alarm.json)."""
        return {
            "schema": schema_ref(SchemaName.ALARM),
            "site": identity.site,
            "gateway": identity.gateway,
            "alarm_id": self.id,
            "rev": self.rev,
            "type": str(self.type),
            "severity": str(self.severity),
            "state": str(self.state),
            "acknowledged": self.ack is not None,
            "cleared": self.state in (AlarmState.CLEARED, AlarmState.CLOSED),
            "device": self.device.as_dict(),
            "cause": self.cause,
            "rule": self.rule,
            "raised_at": format_ts(self.raised_at),
            "updated_at": format_ts(self.updated_at),
            "last_seen_at": format_ts(self.last_seen_at),
            "count": self.count,
            "escalation": self.escalation,
            "ack": None if self.ack is None else self.ack.as_dict(),
            "cleared_at": _ts(self.cleared_at),
            "closed_at": _ts(self.closed_at),
            "clock": str(ClockState.SYNCED if self.synced else ClockState.UNSYNCED),
        }

    def to_record(self) -> dict[str, Any]:
        """Everything, timers included, as JSON-able data for the store."""
        rec = asdict(self)
        for key, value in rec.items():
            if isinstance(value, datetime):
                rec[key] = value.isoformat()
        rec["type"], rec["severity"], rec["state"] = (
            str(self.type),
            str(self.severity),
            str(self.state),
        )
        if self.ack is not None:
            rec["ack"] = {
                **asdict(self.ack),
                "at": self.ack.at.isoformat(),
                "via": str(self.ack.via),
            }
        return rec

    @classmethod
    def from_record(cls, rec: dict[str, Any], now: Instant | None = None) -> Alarm:
        """The alarm stored as `rec`; `now` converts the wall-clock timers of old records."""
        ack = rec.get("ack")
        times = {k: parse_ts(rec.get(k)) for k in ("cleared_at", "closed_at", "clear_signal_at")}
        timers = {k: rec.get(k) for k in ("escalate_due", "clear_due")}
        for old, new in (("escalate_at", "escalate_due"), ("clear_due_at", "clear_due")):
            # Records of older versions hold wall-clock deadlines: what was left of them counts.
            wall = parse_ts(rec.get(old))
            if wall is not None and now is not None:
                timers[new] = now.run + max(0.0, (wall - now.wall).total_seconds())
        return cls(
            id=rec["id"],
            type=AlarmType(rec["type"]),
            severity=Severity(rec["severity"]),
            device=DeviceInfo(**rec["device"]),
            cause=rec["cause"],
            rule=rec["rule"],
            raised_at=datetime.fromisoformat(rec["raised_at"]),
            updated_at=datetime.fromisoformat(rec["updated_at"]),
            last_seen_at=datetime.fromisoformat(rec["last_seen_at"]),
            rev=rec["rev"],
            state=AlarmState(rec["state"]),
            count=rec["count"],
            escalation=rec["escalation"],
            ack=None
            if ack is None
            else Ack(ack["by"], ack["note"], datetime.fromisoformat(ack["at"]), Via(ack["via"])),
            synced=rec.get("synced", True),
            escalate_due=timers["escalate_due"],
            clear_due=timers["clear_due"],
            **times,
        )


@dataclass(frozen=True, slots=True)
class Change:
    """One change of one alarm: what happened, and the alarm right after it.

    `publish` is False for a change that only moves a timer (a clear waiting out the
    damping time): it is stored, but the document did not change.
    """

    alarm: Alarm
    what: str  # raised, repeated, acknowledged, cleared, closed, escalated, clear_pending, ...
    before: AlarmState | None
    publish: bool = True
