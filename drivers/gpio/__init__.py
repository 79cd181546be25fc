"""Dry contacts on GPIO lines (door contacts, exit buttons, smoke relays, SOS buttons) via libgpiod."""

from __future__ import annotations

from pathlib import Path

from gateway.driver import DriverInfo
from gateway.model import Kind

from .driver import GpioDriver, read_once
from .settings import GpioSettings

__all__ = ["DRIVER", "GpioDriver", "GpioSettings"]

DRIVER = DriverInfo(
    name="gpio",
    summary="Dry contacts on GPIO lines: door position and exit buttons, smoke relays, SOS buttons",
    settings_model=GpioSettings,
    factory=GpioDriver,
    kinds=frozenset({Kind.DOOR, Kind.SMOKE, Kind.ELDERLY_ALARM}),
    folder=Path(__file__).parent,
    read_once=read_once,
)
