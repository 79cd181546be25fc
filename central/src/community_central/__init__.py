"""The community ticket service (central side): one ticket per gateway alarm, routed to a team.

Its own distribution (`community-central`), installed next to the central broker, not
on gateways: it imports the shared contract (`contract.py`), never the gateway.  It
reads the alarm contract (docs/mqtt-api.md, "Alarms"); see central/docs/tickets.md.

May import: `community_protocol` and third-party packages; never `gateway` or
`drivers` (tests/test_architecture.py).  Only `cli` imports the `fleet` package.
"""

from __future__ import annotations

from .documents import AlarmDoc, BadAlarm, parse_alarm
from .routing import DEFAULT_TEAMS, Routes, load_routes
from .service import ServiceConfig, TicketService
from .store import AckStatus, Ticket, TicketState, TicketStore

__all__ = [
    "DEFAULT_TEAMS",
    "AckStatus",
    "AlarmDoc",
    "BadAlarm",
    "Routes",
    "ServiceConfig",
    "Ticket",
    "TicketService",
    "TicketState",
    "TicketStore",
    "load_routes",
    "parse_alarm",
]
