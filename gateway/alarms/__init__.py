"""The gateway-side alarm engine: rules turn events into alarms, staff acknowledge them.

`attach(gw)` builds the engine of a running gateway and wires it in (observers,
service, command family); the local web console uses `gw.alarms` (an `AlarmEngine`):
`snapshot()`, `acknowledge()`, `listen()`.  The contract is in docs/mqtt-api.md.

gateway.config imports `gateway.alarms.settings`, and the engine imports the outbox,
which imports gateway.config: so the engine's names load on first use, not here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .model import Alarm, AlarmState, DeviceInfo, Via
from .rules import DEFAULT_RULES, AlarmType, Rule, Severity
from .settings import AlarmsConfig

if TYPE_CHECKING:
    from .engine import CHANNEL, AckOutcome, AlarmEngine, OutputSwitch, UnknownAlarm
    from .wiring import attach

__all__ = [
    "CHANNEL",
    "DEFAULT_RULES",
    "AckOutcome",
    "Alarm",
    "AlarmEngine",
    "AlarmState",
    "AlarmType",
    "AlarmsConfig",
    "DeviceInfo",
    "OutputSwitch",
    "Rule",
    "Severity",
    "UnknownAlarm",
    "Via",
    "attach",
]

_LAZY = {
    "CHANNEL": "engine",
    "AckOutcome": "engine",
    "AlarmEngine": "engine",
    "OutputSwitch": "engine",
    "UnknownAlarm": "engine",
    "attach": "wiring",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
