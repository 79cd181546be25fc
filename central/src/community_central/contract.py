"""What the central side takes from the shared contract, in one place.

The topics, enums, JSON Schema validator and timestamps are the contract both
products share (the protocol package).  They are imported here and nowhere else in central, so
switching their source (the protocol package) is a change to this one module.
"""

from __future__ import annotations

from community_protocol.documents import format_ts
from community_protocol.enums import AlarmState, AlarmType, Severity
from community_protocol.ids import Identity
from community_protocol.schemas import validator
from community_protocol.topics import CentralTopics

__all__ = [
    "AlarmState",
    "AlarmType",
    "CentralTopics",
    "Identity",
    "Severity",
    "format_ts",
    "validator",
]
