"""Simulated devices of every kind, playing a scripted scenario: for demos, tests, benchmarks."""

from __future__ import annotations

import math
from pathlib import Path

from gateway.sdk.driver import DriverInfo
from gateway.sdk.model import Kind

from .driver import SimulatedDriver, read_once
from .settings import SimulatedSettings

__all__ = ["DRIVER", "SimulatedDriver", "SimulatedSettings"]

DRIVER = DriverInfo(
    name="simulated",
    summary="Simulated doors, smoke detectors, meters and SOS buttons playing a scripted scenario",
    settings_model=SimulatedSettings,
    factory=SimulatedDriver,
    kinds=frozenset(Kind),
    folder=Path(__file__).parent,
    message_rate=lambda spec: (
        1.0 / (spec.settings_as(SimulatedSettings).telemetry_period_s or math.inf)
    ),
    read_once=read_once,
)
