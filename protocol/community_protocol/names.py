"""Schema names and versions: what a document's `schema` field says, and which file checks it.

Every document the gateway or the central side publishes starts with
`{"schema": {"name": "community.<name>", "version": 1}}`; `schema_ref` builds that
field, so the names are spelled here only.  `SCHEMA_FILES` lists every JSON Schema
file of the package (`schemas/<file>.json`); tests check both against the files.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

__all__ = [
    "DOCUMENT_FILES",
    "ENVELOPE_NAMES",
    "SCHEMA_FILES",
    "SCHEMA_VERSION",
    "SchemaName",
    "schema_ref",
]

# The major version of every schema in this package; a breaking change makes it 2 and
# moves the topic prefix (community/v2) with it (docs/mqtt-api.md, "Versions").
SCHEMA_VERSION = 1


class SchemaName(StrEnum):
    """The `schema.name` of each published document."""

    TELEMETRY = "community.telemetry"
    EVENT = "community.event"
    GATEWAY_EVENT = "community.gateway_event"
    STATUS = "community.status"
    AVAILABILITY = "community.availability"
    HEALTH = "community.health"
    REPLY = "community.reply"
    ALARM = "community.alarm"
    SERVICE_REQUEST = "community.service_request"
    TICKET = "community.ticket"
    CONFIG_DESIRED = "community.config_desired"
    CONFIG_REPORTED = "community.config_reported"


# Document name -> the schema file (without .json) that checks it.
DOCUMENT_FILES: dict[SchemaName, str] = {
    SchemaName.TELEMETRY: "telemetry",
    SchemaName.EVENT: "event",
    SchemaName.GATEWAY_EVENT: "gateway-event",
    SchemaName.STATUS: "status",
    SchemaName.AVAILABILITY: "availability",
    SchemaName.HEALTH: "health",
    SchemaName.REPLY: "command-reply",
    SchemaName.ALARM: "alarm",
    SchemaName.SERVICE_REQUEST: "service-request",
    SchemaName.TICKET: "ticket",
    SchemaName.CONFIG_DESIRED: "config-desired",
    SchemaName.CONFIG_REPORTED: "config-reported",
}

# The data messages that share the envelope (envelope.json's `schema.name` enum).
ENVELOPE_NAMES: tuple[SchemaName, ...] = (SchemaName.TELEMETRY, SchemaName.EVENT)

# Every schema file: the documents', plus the shared definitions (envelope) and the
# command payloads (with the header line of an update's chunks), which carry no
# `schema` field.
SCHEMA_FILES: tuple[str, ...] = (
    "envelope",
    *DOCUMENT_FILES.values(),
    "command-request",
    "alarm-ack",
    "update-chunk",
)


def schema_ref(name: SchemaName) -> dict[str, Any]:
    """The `schema` field of a document: `{"name": "community.alarm", "version": 1}`."""
    return {"name": str(name), "version": SCHEMA_VERSION}
