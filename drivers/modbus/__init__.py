"""Modbus RTU and TCP meters and panels: profiles as data, one shared connection per bus."""

from __future__ import annotations

from pathlib import Path

from gateway.sdk.driver import DriverInfo
from gateway.sdk.model import Kind

from .driver import ModbusDriver, read_once
from .settings import ModbusSettings, check_devices, serial_ports, validate_group

__all__ = ["DRIVER", "ModbusDriver", "ModbusSettings", "validate_group"]

DRIVER = DriverInfo(
    name="modbus",
    summary="Modbus RTU/TCP meters and fire panel inputs, described by profiles",
    settings_model=ModbusSettings,
    factory=ModbusDriver,
    kinds=frozenset({Kind.METER, Kind.SMOKE}),
    folder=Path(__file__).parent,
    message_rate=lambda spec: 1.0 / spec.settings_as(ModbusSettings).poll_interval_s,
    read_once=read_once,
    check_devices=check_devices,
    serial_ports=serial_ports,
)
