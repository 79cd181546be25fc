"""What the ticket database holds: its tables, and its rows as typed values.

`SCHEMA` is written once for SQLite and PostgreSQL (`{pk}` and `{real}` are filled per
engine, see database.py); a `Ticket` is one row of `tickets` (and builds the ticket
event document), an `AckRequest` one row of `ack_requests` with its ticket's alarm.
store.py does the reading and writing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from community_protocol.names import SchemaName, schema_ref

from .contract import format_ts

if TYPE_CHECKING:
    from .documents import AlarmDoc

__all__ = [
    "SCHEMA",
    "TICKET_COLUMNS",
    "AckRequest",
    "AckStatus",
    "Applied",
    "Ticket",
    "TicketState",
    "format_ticket_id",
    "parse_ticket_id",
    "ticket_from_row",
    "ticket_state",
]

SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    id {pk},
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    alarm_id TEXT NOT NULL,
    team TEXT NOT NULL,
    state TEXT NOT NULL,
    alarm_type TEXT NOT NULL,
    severity TEXT NOT NULL,
    alarm_state TEXT NOT NULL,
    alarm_rev INTEGER NOT NULL,
    alarm TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    raised_ts {real} NOT NULL,
    opened_ts {real} NOT NULL,
    acknowledged_ts {real},
    acknowledged_by TEXT,
    ack_note TEXT,
    resolved_ts {real},
    last_ack_error TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    published_version INTEGER NOT NULL DEFAULT 0,
    reopened INTEGER NOT NULL DEFAULT 0,
    UNIQUE (site, gateway, alarm_id)
);
CREATE INDEX IF NOT EXISTS tickets_unpublished ON tickets(id)
    WHERE version > published_version;
CREATE INDEX IF NOT EXISTS tickets_state ON tickets(state, id);
CREATE TABLE IF NOT EXISTS ack_requests (
    request_id TEXT PRIMARY KEY,
    ticket_id BIGINT NOT NULL REFERENCES tickets(id),
    by TEXT NOT NULL,
    note TEXT NOT NULL,
    requested_ts {real} NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts {real} NOT NULL,
    sent_ts {real},
    replied_ts {real},
    reply TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS ack_requests_due ON ack_requests(next_attempt_ts)
    WHERE status = 'pending';
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS workers (
    client_id TEXT PRIMARY KEY,
    seen_ts {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS leader (
    id INTEGER PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ts {real} NOT NULL
);
"""


class TicketState(StrEnum):
    """The alarm's lifecycle as work: `open` needs a person, `resolved` needs nobody.

    open: nobody acknowledged the alarm (active, or cleared but unchecked);
    acknowledged: someone did and its condition is still there; resolved: the alarm
    closed (acknowledged and cleared).  See `ticket_state` and docs/tickets.md.
    """

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


def ticket_state(doc: AlarmDoc) -> TicketState:
    """The ticket state an alarm document calls for; a pure function of the document.

    A cleared alarm nobody acknowledged still needs a person (the gateway keeps it
    `cleared` for that reason), so its ticket stays open; only `closed` resolves.
    """
    if doc.state == "closed" or (doc.cleared and doc.acknowledged):
        return TicketState.RESOLVED
    return TicketState.ACKNOWLEDGED if doc.acknowledged else TicketState.OPEN


class AckStatus(StrEnum):
    """Where a staff acknowledgement stands: waiting for the gateway, or its answer."""

    PENDING = "pending"
    ACCEPTED = "accepted"
    ALREADY_ACKNOWLEDGED = "already_acknowledged"
    ERROR = "error"


def format_ticket_id(number: int) -> str:
    """1 -> 'T-000001'."""
    return f"T-{number:06d}"


def parse_ticket_id(text: str) -> int:
    """'T-000123', 't-123' or '123' -> 123; ValueError otherwise."""
    digits = text.strip().upper().removeprefix("T-")
    if not digits.isdigit():
        raise ValueError(f"{text!r} is not a ticket id; they look like T-000123")
    return int(digits)


@dataclass(frozen=True, slots=True)
class Ticket:
    """One ticket as stored."""

    number: int
    site: str
    gateway: str
    alarm_id: str
    team: str
    state: TicketState
    alarm_type: str
    severity: str
    alarm_state: str
    alarm_rev: int
    alarm: dict[str, Any]
    raised_at: str
    raised_ts: float
    opened_ts: float
    acknowledged_ts: float | None
    acknowledged_by: str | None
    ack_note: str | None
    resolved_ts: float | None
    last_ack_error: str | None
    version: int
    reopened: int  # times its alarm became active again after the ticket was resolved

    @property
    def ticket_id(self) -> str:
        return format_ticket_id(self.number)

    @property
    def open_latency_s(self) -> float:
        """Alarm raised (gateway clock) to ticket opened (service clock)."""
        return self.opened_ts - self.raised_ts

    @property
    def ack_latency_s(self) -> float | None:
        """Alarm raised to acknowledged, or None while nobody acknowledged it."""
        return None if self.acknowledged_ts is None else self.acknowledged_ts - self.raised_ts

    def event(self) -> dict[str, Any]:
        """The ticket event document (gateway/schemas/ticket.json)."""

        def ts(value: float | None) -> str | None:
            return None if value is None else _fmt(value)

        return {
            "schema": schema_ref(SchemaName.TICKET),
            "ticket_id": self.ticket_id,
            "version": self.version,
            "state": str(self.state),
            "team": self.team,
            "alarm": {
                "site": self.site,
                "gateway": self.gateway,
                "alarm_id": self.alarm_id,
                "rev": self.alarm_rev,
                "type": self.alarm_type,
                "severity": self.severity,
                "state": self.alarm_state,
                "device": self.alarm.get("device", {}),
                "raised_at": self.raised_at,
            },
            "opened_at": _fmt(self.opened_ts),
            "acknowledged_at": ts(self.acknowledged_ts),
            "acknowledged_by": self.acknowledged_by,
            "ack_error": self.last_ack_error,
            "resolved_at": ts(self.resolved_ts),
            "reopened": self.reopened,
            "timings": {
                "open_s": round(self.open_latency_s, 3),
                "ack_s": None if self.ack_latency_s is None else round(self.ack_latency_s, 3),
            },
        }


def _fmt(unix: float) -> str:
    return format_ts(datetime.fromtimestamp(unix, UTC))


@dataclass(frozen=True, slots=True)
class AckRequest:
    """A staff acknowledgement to deliver to the gateway that raised the alarm."""

    request_id: str
    ticket_number: int
    by: str
    note: str
    requested_ts: float
    status: AckStatus
    attempts: int
    error: str | None
    site: str
    gateway: str
    alarm_id: str


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying one alarm document did: `opened`, `updated`, `reopened` (its alarm
    is active again after the ticket was resolved) or `stale` (nothing)."""

    outcome: str
    ticket: Ticket


TICKET_COLUMNS = (
    "id, site, gateway, alarm_id, team, state, alarm_type, severity, alarm_state, alarm_rev,"
    " alarm, raised_at, raised_ts, opened_ts, acknowledged_ts, acknowledged_by, ack_note,"
    " resolved_ts, last_ack_error, version, reopened"
)


def ticket_from_row(row: Sequence[Any]) -> Ticket:
    """A row of TICKET_COLUMNS as a Ticket."""
    values = list(row)
    values[5] = TicketState(values[5])
    values[10] = json.loads(values[10])
    return Ticket(*values)
