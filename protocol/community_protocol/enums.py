"""Every closed set of values the JSON Schemas enumerate, as the code's enums.

`ENUM_SOURCES` says where each enum is spelled in the schemas; tests/test_protocol.py
fails when a schema's `enum` and the code's enum differ, or when a schema gains an
`enum` no code enum stands for.  Adding a value is one line here and the same word in
the schema file.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "ENUM_SOURCES",
    "AckVia",
    "AlarmState",
    "AlarmType",
    "AvailabilityState",
    "CheckStatus",
    "ClockState",
    "ConfigResult",
    "EventType",
    "GatewayEventType",
    "GatewayState",
    "Kind",
    "Lang",
    "LogLevel",
    "RequestCategory",
    "RequestStatusUpdate",
    "Severity",
    "StorageProblem",
    "StorageStore",
    "TicketState",
    "Unit",
    "UpdateResult",
    "ValueType",
]


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
    """Device event types (event.json `$defs/event_type`)."""

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


class GatewayEventType(StrEnum):
    """Events of the gateway itself, not of a device (gateway-event.json)."""

    STORAGE = "gateway.storage"
    CONFIG = "gateway.config"  # a desired configuration applied, refused or rolled back
    UPDATE = "gateway.update"  # a software update refused, switched, committed or rolled back


class ConfigResult(StrEnum):
    """How a desired configuration went (config-reported.json, the `gateway.config` event)."""

    TESTING = "testing"  # switched to it; committed once the broker sees the gateway again
    APPLIED = "applied"
    REFUSED = "refused"  # not signed, not valid, or older: nothing changed
    ROLLED_BACK = "rolled_back"  # tried, did not come back in time: the previous one runs


class CheckStatus(StrEnum):
    """How one check of `gateway check` went (cmd/diag/check's results)."""

    OK = "OK"
    FAIL = "FAIL"
    SKIP = "SKIP"  # a check it needs failed first, or it cannot run here


class LogLevel(StrEnum):
    """The lowest level of the log lines cmd/diag/logs returns."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class UpdateResult(StrEnum):
    """How a software update went (the `gateway.update` event; docs/fleet.md)."""

    REFUSED = "refused"  # not signed, not for this machine, or not shareable: nothing changed
    SWITCHED = "switched"  # built beside the running release; restarting to try it
    TESTING = "testing"  # the new release started; its health gate is running
    COMMITTED = "committed"
    ROLLED_BACK = "rolled_back"  # failed its gate or crash-looped: the previous one runs


class StorageStore(StrEnum):
    """Which of the gateway's stores a `gateway.storage` event is about."""

    OUTBOX = "outbox"
    ALARMS = "alarms"
    REQUESTS = "requests"


class StorageProblem(StrEnum):
    """What happened to that store."""

    DAMAGED = "damaged"
    FULL = "full"
    RECOVERED = "recovered"
    UNCLEAN_STOP = "unclean_stop"  # restarted after a power cut: RAM-held readings lost


class ClockState(StrEnum):
    """Whether `ts` comes from a clock known to be synchronised (NTP) or not."""

    SYNCED = "synced"
    UNSYNCED = "unsynced"


class GatewayState(StrEnum):
    """A gateway's connection as its retained status says (status.json)."""

    ONLINE = "online"
    OFFLINE = "offline"


class AvailabilityState(StrEnum):
    """Whether the gateway reaches a device; `unknown` is neither online nor offline."""

    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


class AlarmType(StrEnum):
    """What kind of response an alarm needs."""

    FIRE = "fire"
    CARE = "care"
    WELLNESS = "wellness"
    SECURITY = "security"
    MAINTENANCE = "maintenance"


class Severity(StrEnum):
    """How urgent an alarm is; sets its escalation time."""

    CRITICAL = "critical"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


class AlarmState(StrEnum):
    """`cleared`: the condition is gone but nobody acknowledged yet; `closed`: both."""

    ACTIVE = "active"
    ACKNOWLEDGED = "acknowledged"
    CLEARED = "cleared"
    CLOSED = "closed"


class AckVia(StrEnum):
    """Where an acknowledgement came from."""

    MQTT = "mqtt"
    CLI = "cli"
    WEB = "web"


class TicketState(StrEnum):
    """A ticket of the central ticket service (ticket.json `state`)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class RequestCategory(StrEnum):
    """What a resident asks for on a kiosk."""

    REPAIR = "repair"
    CLEANING = "cleaning"
    ASSISTANCE = "assistance"  # help for an elderly or disabled resident
    FEEDBACK = "feedback"  # complaint or suggestion


class RequestStatusUpdate(StrEnum):
    """The statuses the platform sends for a resident's request (cmd/requests/{code}/status)."""

    RECEIVED = "received"
    ASSIGNED = "assigned"
    DONE = "done"


class Lang(StrEnum):
    """Languages of the kiosk (a service request's `lang`)."""

    ZH = "zh"
    EN = "en"


# enum -> (schema name, JSON pointer of an `enum` array inside it), every place it is
# spelled.  A schema `enum` missing here fails the test, so nothing drifts unseen.
ENUM_SOURCES: dict[type[StrEnum], tuple[tuple[str, str], ...]] = {
    Kind: (("envelope", "/$defs/kind/enum"),),
    ClockState: (("envelope", "/$defs/clock/enum"),),
    Unit: (("telemetry", "/$defs/unit/enum"),),
    ValueType: (("telemetry", "/$defs/reading/properties/type/enum"),),
    EventType: (("event", "/$defs/event_type/enum"),),
    GatewayEventType: (("gateway-event", "/properties/event/properties/type/enum"),),
    StorageStore: (("gateway-event", "/$defs/storage/properties/store/enum"),),
    StorageProblem: (("gateway-event", "/$defs/storage/properties/problem/enum"),),
    ConfigResult: (
        ("config-reported", "/properties/result/enum"),
        ("gateway-event", "/$defs/config/properties/result/enum"),
    ),
    UpdateResult: (("gateway-event", "/$defs/update/properties/result/enum"),),
    GatewayState: (("status", "/properties/state/enum"),),
    AvailabilityState: (("availability", "/properties/state/enum"),),
    AlarmType: (("alarm", "/properties/type/enum"),),
    Severity: (
        ("alarm", "/properties/severity/enum"),
        ("ticket", "/properties/alarm/properties/severity/enum"),
    ),
    AlarmState: (
        ("alarm", "/properties/state/enum"),
        ("ticket", "/properties/alarm/properties/state/enum"),
    ),
    AckVia: (("alarm", "/properties/ack/oneOf/1/properties/via/enum"),),
    TicketState: (("ticket", "/properties/state/enum"),),
    RequestCategory: (("service-request", "/properties/category/enum"),),
    RequestStatusUpdate: (("command-request", "/$defs/request_status/properties/status/enum"),),
    Lang: (("service-request", "/properties/lang/enum"),),
    CheckStatus: (
        (
            "command-reply",
            "/$defs/diag_check_result/properties/results/items/properties/status/enum",
        ),
    ),
    LogLevel: (("command-request", "/$defs/diag/properties/level/enum"),),
}
