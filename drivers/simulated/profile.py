"""Consumption profiles: a day's demand curve and the readings derived from it, as data.

A profile is one YAML file in `profiles/`; adding a kind of meter is adding a file.
The curve is a daily mean demand (power in W, flow in m³/h) shaped by 24 hourly
factors; each reading names how it follows from that demand (see `ReadingSource`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.sdk.model import Unit, ValueType
from gateway.sdk.profiles import ProfileLibrary

__all__ = [
    "PROFILE_DIR",
    "Demand",
    "Profile",
    "ReadingSource",
    "ReadingSpec",
    "load_profile",
    "profile_names",
]

PROFILE_DIR = Path(__file__).parent / "profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReadingSource(StrEnum):
    """How a reading follows from the demand curve."""

    DEMAND = "demand"  # the demand itself: power in W, flow in m³/h
    COUNTER = "counter"  # its integral since the meter was installed: kWh, m³
    STEADY = "steady"  # a level that only wobbles around `value`: mains voltage
    QUOTIENT = "quotient"  # demand divided by a steady reading: current = power / voltage


class Demand(_Strict):
    """The demand over a day: `mean` shaped by one factor per local hour."""

    unit: Unit
    mean: float = Field(gt=0, description="the daily mean demand, in `unit`")
    hourly: tuple[float, ...] = Field(
        min_length=24, max_length=24, description="factor at the start of each hour 0-23"
    )
    noise: float = Field(0.0, ge=0, lt=1, description="relative amplitude of the wobble")
    noise_step_s: float = Field(60.0, gt=0, le=3600, description="how long one wobble lasts")

    @model_validator(mode="after")
    def _never_negative(self) -> Self:
        if any(f < 0 for f in self.hourly) or not any(self.hourly):
            raise ValueError("hourly factors must be >= 0 and not all zero")
        # Demand is the linear curve plus a wobble of at most noise x (curve at the start
        # of the step); the curve can fall by slope x step meanwhile.  A counter must never
        # go backwards, so the sum has to stay above zero everywhere.
        scale = 24 / sum(self.hourly)
        lowest = min(self.hourly) * scale
        slope = max(
            abs(self.hourly[(h + 1) % 24] - self.hourly[h]) * scale / 3600 for h in range(24)
        )
        if self.noise > 0 and (1 - self.noise) * lowest <= self.noise * slope * self.noise_step_s:
            raise ValueError(
                f"noise {self.noise} can push demand below zero at the lowest hourly factor; "
                "lower noise or noise_step_s, or raise the lowest factor"
            )
        return self


class ReadingSpec(_Strict):
    """One reading a meter of this profile reports, and how it is computed."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    source: ReadingSource
    unit: Unit
    digits: int = Field(3, ge=0, le=9, description="decimal places the meter reports")
    per_demand_hour: float | None = Field(
        None, gt=0, description="counter: units per demand-unit hour (W → kWh: 0.001)"
    )
    value: float | None = Field(None, gt=0, description="steady: the nominal level")
    noise: float = Field(0.0, ge=0, lt=1, description="steady: relative wobble")
    divisor: str | None = Field(None, description="quotient: the steady reading to divide by")

    @model_validator(mode="after")
    def _fields_of_source(self) -> Self:
        needs = {
            ReadingSource.COUNTER: {"per_demand_hour"},
            ReadingSource.STEADY: {"value"},
            ReadingSource.QUOTIENT: {"divisor"},
            ReadingSource.DEMAND: set(),
        }[self.source]
        optional = {"noise"} if self.source is ReadingSource.STEADY else set()
        given = self.model_fields_set & {"per_demand_hour", "value", "noise", "divisor"}
        if missing := needs - given:
            raise ValueError(f"a {self.source} reading needs {', '.join(sorted(missing))}")
        if extra := given - needs - optional:
            raise ValueError(f"a {self.source} reading has no {', '.join(sorted(extra))}")
        return self

    @property
    def value_type(self) -> ValueType:
        return ValueType.COUNTER if self.source is ReadingSource.COUNTER else ValueType.GAUGE


class Profile(_Strict):
    """A meter model's behaviour: its demand curve and its readings."""

    description: str = Field(min_length=1)
    demand: Demand
    readings: tuple[ReadingSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        names = [r.name for r in self.readings]
        if len(set(names)) != len(names):
            raise ValueError(f"reading names repeat: {names}")
        steady = {r.name for r in self.readings if r.source is ReadingSource.STEADY}
        for r in self.readings:
            if r.source is ReadingSource.DEMAND and r.unit != self.demand.unit:
                raise ValueError(
                    f"reading {r.name} is the demand, so its unit is {self.demand.unit}"
                )
            if r.divisor is not None and r.divisor not in steady:
                raise ValueError(f"reading {r.name} divides by {r.divisor!r}, not a steady reading")
        if not any(r.source is ReadingSource.COUNTER for r in self.readings):
            raise ValueError("a meter profile needs at least one counter reading")
        return self


_LIBRARY = ProfileLibrary(PROFILE_DIR, Profile)


def profile_names() -> tuple[str, ...]:
    """Names of the profiles shipped in `profiles/`, sorted."""
    return _LIBRARY.names


def load_profile(name: str) -> Profile:
    """The validated profile `name`; KeyError if there is no such file."""
    return _LIBRARY.load(name)
