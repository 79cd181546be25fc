"""Relay outputs: a line driven on or off by the `on`, `off` and `pulse` device commands.

Pure: `parse_command` checks a command and its arguments; `Relay` knows its line, its
polarity and the state last commanded, which is re-applied when the chip is requested
again after a fault.  The driver does the writing.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.sdk.driver import CommandError, DeviceSpec

from .settings import Active, Bias
from .source import LineConfig

__all__ = ["COMMANDS", "PULSE_MAX_S", "Relay", "parse_command"]

COMMANDS = ("on", "off", "pulse")
PULSE_MAX_S = 3600.0


@dataclass(slots=True)
class Relay:
    """One relay output line and the state it was last switched to."""

    spec: DeviceSpec
    chip: str
    offset: int
    active: Active
    on: bool = False  # at start every relay is requested off
    pulse: asyncio.Task[None] | None = None

    def level(self, on: bool) -> int:
        """The line level that switches the relay `on` (or off)."""
        high = on if self.active is Active.HIGH else not on
        return int(high)

    @property
    def config(self) -> LineConfig:
        """How the line is requested: an output already at the commanded state."""
        return LineConfig(Bias.NONE, 0, output=self.level(self.on))


def parse_command(device_id: str, name: str, args: Mapping[str, Any]) -> tuple[bool, float | None]:
    """(switch on?, seconds until it goes off again, for a pulse); CommandError if wrong."""
    if name not in COMMANDS:
        raise CommandError(f"relay {device_id!r} has no command {name!r} (it has: on, off, pulse)")
    extra = set(args) - ({"seconds"} if name == "pulse" else set())
    if extra:
        raise CommandError(f"relay command {name!r} takes no {', '.join(sorted(extra))}")
    if name != "pulse":
        return name == "on", None
    seconds = args.get("seconds", 1.0)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or not 0 < seconds <= PULSE_MAX_S
    ):
        raise CommandError(f"pulse needs seconds between 0 and {PULSE_MAX_S:g}, not {seconds!r}")
    return True, float(seconds)
