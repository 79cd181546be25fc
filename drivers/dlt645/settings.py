"""A DL/T 645 meter's `driver:` section, validated before anything is opened."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from drivers.dlt645.table import load_table
from gateway.sdk.devicechecks import SharedLine
from gateway.sdk.driver import DeviceProblem, DeviceSpec

__all__ = ["DEFAULT_READINGS", "BusSettings", "Dlt645Settings", "Parity", "check_devices"]

DEFAULT_READINGS = ("energy_total", "voltage_a", "current_a", "power_total", "power_factor_total")


class Parity(StrEnum):
    """Serial parity; DL/T 645 meters almost always use even parity (8E1)."""

    EVEN = "E"
    NONE = "N"
    ODD = "O"


class BusSettings(BaseModel):
    """The RS-485 port; every meter on the same port must give the same values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(min_length=1, description="e.g. /dev/ttyUSB1")
    baud: int = 2400
    parity: Parity = Parity.EVEN
    stopbits: int = Field(1, ge=1, le=2)

    @field_validator("baud")
    @classmethod
    def _baud(cls, value: int) -> int:
        if value not in (1200, 2400, 4800, 9600, 19200):
            raise ValueError(
                "DL/T 645 meters use 1200, 2400, 4800, 9600 or 19200 baud (2400 is typical)"
            )
        return value


class Dlt645Settings(BaseModel):
    """One meter: where it is on the bus, what to read and how often."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bus: BusSettings
    address: str = Field(description="12 digits as printed on the meter's label")
    poll_interval_s: float = Field(60.0, gt=0, le=86400)
    readings: tuple[str, ...] = DEFAULT_READINGS
    # A reply normally starts within 500 ms at 2400 baud; give slow meters some margin.
    timeout_s: float = Field(1.0, gt=0, le=30)
    offline_after: int = Field(3, ge=1, le=100, description="failed polls in a row")
    backoff_max_s: float = Field(600.0, gt=0, le=86400)

    @field_validator("address", mode="before")
    @classmethod
    def _address(cls, value: Any) -> Any:
        if isinstance(value, int):
            # YAML reads 000012345678 as a number and drops the zeros (or, with only
            # digits 0-7, as octal): the label's digits are lost either way.
            raise ValueError(
                'write the address in quotes, as on the label: address: "000012345678"'
            )
        if isinstance(value, str) and not re.fullmatch(r"\d{12}", value):
            raise ValueError(
                f"address {value!r} must be the 12 digits printed on the meter's label "
                "(pad with zeros on the left)"
            )
        return value

    @field_validator("readings")
    @classmethod
    def _readings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        table = load_table()
        if not value:
            raise ValueError("list at least one reading")
        unknown = [name for name in value if table.get(name) is None]
        if unknown:
            raise ValueError(
                f"unknown reading {', '.join(unknown)} (known: {', '.join(table.names)})"
            )
        if len(set(value)) != len(value):
            raise ValueError("a reading is listed twice")
        return value


def check_devices(mine: Sequence[DeviceSpec], _every: Sequence[DeviceSpec]) -> list[DeviceProblem]:
    """Meters on one port share its serial settings, and each has its own address.

    Two meters at one address both answer (or the wrong one does): the readings could
    belong to either flat, so both are in conflict.
    """
    buses = SharedLine("bus")
    for spec in mine:
        s = spec.settings_as(Dlt645Settings)
        shared = {f"bus.{key}": getattr(s.bus, key) for key in ("baud", "parity", "stopbits")}
        buses.settings(spec, s.bus.port, shared)
        buses.claim(
            spec,
            s.bus.port,
            "address",
            s.address,
            "each meter on a bus has its own address (read it from the meter's label)",
        )
    return buses.problems
