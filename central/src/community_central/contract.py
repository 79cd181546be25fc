"""What the central side takes from the shared contract, in one place.

The enums, the JSON Schema validator, timestamps and the signing of commands are the
contract both products share.  They are imported here and nowhere else in central, so
switching their source (the protocol package) is a change to this one module.
"""

from __future__ import annotations

from community_protocol.documents import format_ts
from community_protocol.enums import AlarmState, AlarmType, Severity
from community_protocol.ids import Identity
from community_protocol.schemas import validator

# TEMPORARY (issue 19): signing still comes from the gateway; the central distribution
# must not import gateway.* once it has its own.
from gateway.security.signing import CommandSigner, load_private_key

__all__ = [
    "AlarmState",
    "AlarmType",
    "CommandSigner",
    "Identity",
    "Severity",
    "format_ts",
    "load_private_key",
    "validator",
]
