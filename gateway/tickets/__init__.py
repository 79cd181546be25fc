"""Reference ticket service (central side): one ticket per gateway alarm, routed to a team.

Not part of the gateway's runtime: it runs next to the central broker (`gateway tickets
serve`), reads the alarm contract (docs/mqtt-api.md, "Alarms") and shows it end to end.
See docs/tickets.md for operators.
"""

from __future__ import annotations

from .documents import AlarmDoc, BadAlarm, parse_alarm
from .routing import DEFAULT_TEAMS, Routes, load_routes
from .service import ServiceConfig, TicketService, TicketTopics
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
    "TicketTopics",
    "load_routes",
    "parse_alarm",
]
