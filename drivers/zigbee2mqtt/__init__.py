"""Zigbee devices through zigbee2mqtt: smoke detectors, SOS buttons, door contacts.

See README.md in this folder for pairing and configuration.
"""

from __future__ import annotations

from pathlib import Path

from drivers.zigbee2mqtt.driver import Zigbee2MqttDriver
from drivers.zigbee2mqtt.settings import Zigbee2MqttSettings, check_devices
from gateway.sdk.driver import DriverInfo
from gateway.sdk.model import Kind

__all__ = ["DRIVER"]

DRIVER = DriverInfo(
    name="zigbee2mqtt",
    summary="Zigbee smoke detectors, SOS buttons and door contacts through zigbee2mqtt",
    settings_model=Zigbee2MqttSettings,
    factory=Zigbee2MqttDriver,
    kinds=frozenset({Kind.SMOKE, Kind.ELDERLY_ALARM, Kind.DOOR}),
    folder=Path(__file__).parent,
    check_devices=check_devices,
)
