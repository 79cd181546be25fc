"""The contract between community gateways and the central platform, shared by both sides.

Lives here: `topics` (the MQTT topic tree in both directions), `names` (schema names
and versions), `enums` (every value set the schemas enumerate), `ids` (site, gateway
and device ids), `documents` (builders of the documents), `signing` (what a signature
covers), `ed25519` (keys, signing and verifying: the `signing` extra), `schemas` (the
JSON Schema files and their loader: jsonschema, the `validate` extra), `problems`
(what is wrong in a file, as `file:line key.path: message`) and `yamlsource` (YAML read
with the line of every key, hostile files refused: PyYAML, the `files` extra), which
the gateway's config and central's routes and fleet configs share, and `mqtt` (the
paho-mqtt pieces both products' adapters use: the `mqtt` extra).

May import: nothing outside the standard library, but jsonschema (lazily, in
`schemas.validator`), cryptography (in `ed25519` only), PyYAML (in `yamlsource`
only) and paho-mqtt (in `mqtt` only).
"""

from .enums import (
    AckVia,
    AlarmState,
    AlarmType,
    AvailabilityState,
    ClockState,
    EventType,
    GatewayEventType,
    GatewayState,
    Kind,
    Lang,
    RequestCategory,
    RequestStatusUpdate,
    Severity,
    StorageProblem,
    StorageStore,
    TicketState,
    Unit,
    ValueType,
)
from .ids import Identity
from .names import SCHEMA_VERSION, SchemaName, schema_ref
from .topics import DEFAULT_PREFIX, CentralTopics, CommandPath, Topics

__all__ = [
    "DEFAULT_PREFIX",
    "SCHEMA_VERSION",
    "AckVia",
    "AlarmState",
    "AlarmType",
    "AvailabilityState",
    "CentralTopics",
    "ClockState",
    "CommandPath",
    "EventType",
    "GatewayEventType",
    "GatewayState",
    "Identity",
    "Kind",
    "Lang",
    "RequestCategory",
    "RequestStatusUpdate",
    "SchemaName",
    "Severity",
    "StorageProblem",
    "StorageStore",
    "TicketState",
    "Topics",
    "Unit",
    "ValueType",
    "schema_ref",
]
