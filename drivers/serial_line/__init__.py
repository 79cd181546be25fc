"""RF receivers (433/868 MHz) on a serial port: SOS pendants and wireless smoke detectors.

See README.md in this folder for wiring, pairing and configuration.
"""

from __future__ import annotations

from pathlib import Path

from drivers.serial_line.driver import SerialLineDriver
from drivers.serial_line.settings import SerialLineSettings, check_devices
from gateway.sdk.driver import DriverInfo, SerialPortUse
from gateway.sdk.model import Kind

__all__ = ["DRIVER"]

DRIVER = DriverInfo(
    name="serial_line",
    summary="RF receivers printing one line per signal: SOS pendants, smoke detectors",
    settings_model=SerialLineSettings,
    factory=SerialLineDriver,
    kinds=frozenset({Kind.ELDERLY_ALARM, Kind.SMOKE}),
    folder=Path(__file__).parent,
    check_devices=check_devices,
    serial_ports=lambda spec: [SerialPortUse(spec.settings_as(SerialLineSettings).port, ("port",))],
)
