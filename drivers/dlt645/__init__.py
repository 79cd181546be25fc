"""DL/T 645-2007 electricity meters on RS-485: energy, voltage, current, power, power factor.

See README.md in this folder for wiring and configuration.
"""

from __future__ import annotations

from pathlib import Path

from drivers.dlt645.driver import Dlt645Driver, read_once
from drivers.dlt645.settings import Dlt645Settings, check_devices
from gateway.sdk.driver import DriverInfo, SerialPortUse
from gateway.sdk.model import Kind

__all__ = ["DRIVER"]

DRIVER = DriverInfo(
    name="dlt645",
    summary="DL/T 645-2007 electricity meters on an RS-485 bus",
    settings_model=Dlt645Settings,
    factory=Dlt645Driver,
    kinds=frozenset({Kind.METER}),
    folder=Path(__file__).parent,
    message_rate=lambda spec: 1.0 / spec.settings_as(Dlt645Settings).poll_interval_s,
    read_once=read_once,
    check_devices=check_devices,
    serial_ports=lambda spec: [
        SerialPortUse(spec.settings_as(Dlt645Settings).bus.port, ("bus", "port"))
    ],
)
