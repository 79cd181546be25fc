"""OSDP card readers on RS-485 (the gateway is the control panel), via libosdp.

See README.md in this folder for wiring, keys, configuration and the events.
"""

from __future__ import annotations

from pathlib import Path

from gateway.sdk.driver import DriverInfo, SerialPortUse
from gateway.sdk.model import Kind

from .driver import OsdpDriver
from .probe import read_once
from .settings import OsdpSettings, check_devices

__all__ = ["DRIVER", "OsdpDriver", "OsdpSettings"]

DRIVER = DriverInfo(
    name="osdp",
    summary="OSDP card readers on RS-485: card reads, keypad, tamper; card numbers pseudonymised",
    settings_model=OsdpSettings,
    factory=OsdpDriver,
    kinds=frozenset({Kind.DOOR}),
    folder=Path(__file__).parent,
    read_once=read_once,
    check_devices=check_devices,
    serial_ports=lambda spec: [SerialPortUse(spec.settings_as(OsdpSettings).port, ("port",))],
)
