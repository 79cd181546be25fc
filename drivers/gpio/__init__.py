"""GPIO lines via libgpiod: dry contacts (doors, exit buttons, smoke relays, SOS) and relays."""

from __future__ import annotations

from pathlib import Path

from gateway.sdk.driver import DriverInfo
from gateway.sdk.model import Kind

from .driver import GpioDriver, read_once
from .settings import GpioSettings, check_devices

__all__ = ["DRIVER", "GpioDriver", "GpioSettings"]

DRIVER = DriverInfo(
    name="gpio",
    summary="GPIO lines: door contacts and exit buttons, smoke relays, SOS buttons; relay outputs",
    settings_model=GpioSettings,
    factory=GpioDriver,
    kinds=frozenset({Kind.DOOR, Kind.SMOKE, Kind.ELDERLY_ALARM, Kind.METER}),
    folder=Path(__file__).parent,
    read_once=read_once,
    check_devices=check_devices,
)
