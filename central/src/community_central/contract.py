"""What the central side takes from the shared contract, in one place.

The enums, the JSON Schema validator, timestamps and the signing of commands are the
contract both products share.  They are imported here and nowhere else in central, so
switching their source (the protocol package) is a change to this one module.
"""

from __future__ import annotations

# TEMPORARY (issue 19): these come from the gateway until the protocol package lands;
# the central distribution must not import gateway.* once it has.
from gateway.alarms.model import AlarmState
from gateway.alarms.rules import AlarmType, Severity
from gateway.mqtt.schemas import validator
from gateway.sdk.model import Identity, format_ts
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
