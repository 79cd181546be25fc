"""The `wellness:` section: inactivity checks of flats where an elderly resident lives alone.

Validated with the core sections; `wellness_problems` then checks the device ids a check
names against the configured devices (they are only known once every device is valid)
and returns problems with their key path, so `gateway validate` gives the line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import EventType, Kind

__all__ = [
    "ActivityRules",
    "InactivityCheck",
    "WellnessConfig",
    "activity_devices",
    "parse_duration",
    "wellness_problems",
]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration like `90s`, `30m`, `12h` or `1d`; ValueError otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 30m, 12h or 1d")
    return float(match[1]) * _SECONDS[match[2]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ActivityRules(_Strict):
    """What counts as a sign of life in a flat; the defaults fit most flats."""

    # Events of any activity device (door contacts, motion sensors).
    events: tuple[EventType, ...] = (
        EventType.DOOR_OPENED,
        EventType.DOOR_CLOSED,
        EventType.DOOR_REQUEST_TO_EXIT,
        EventType.ACTIVITY_MOTION,
    )
    # Events of the check's own elderly alarm device: the resident pressed it.
    own_events: tuple[EventType, ...] = (EventType.ELDERLY_SOS,)
    # A water counter (a counter reading in m³) that rose by more than this since the
    # previous reading: a tap was used.  The first reading after start only sets the base.
    water_rise_l: float = Field(1.0, gt=0)
    # Electric power (a gauge reading in W) above this: a kettle, a cooker, a hair dryer;
    # set above what the fridge and standby draw.
    power_w: float = Field(300.0, gt=0)


class InactivityCheck(_Strict):
    """One flat: raise `elderly.inactivity` on `device` after `window` without activity."""

    device: str = Field(description="the flat's elderly_alarm device the event is raised on")
    window: str | None = Field(None, description="e.g. 12h, 30m, 90s")
    window_s: float | None = Field(None, gt=0)
    # None: every device with the same location.building and location.unit as `device`.
    activity_devices: tuple[str, ...] | None = None

    @field_validator("window")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @model_validator(mode="after")
    def _one_window(self) -> Self:
        if (self.window is None) == (self.window_s is None):
            raise ValueError("give exactly one of window (e.g. 12h) or window_s")
        if self.seconds < 1:
            raise ValueError("the window must be at least 1 s")
        return self

    @property
    def seconds(self) -> float:
        """The window in seconds."""
        if self.window_s is not None:
            return self.window_s
        assert self.window is not None
        return parse_duration(self.window)


class WellnessConfig(_Strict):
    """The `wellness:` section; no checks by default."""

    checks: tuple[InactivityCheck, ...] = ()
    activity: ActivityRules = ActivityRules()

    @field_validator("checks")
    @classmethod
    def _one_per_device(cls, value: tuple[InactivityCheck, ...]) -> tuple[InactivityCheck, ...]:
        seen: set[str] = set()
        for check in value:
            if check.device in seen:
                raise ValueError(f"device {check.device!r} has two inactivity checks")
            seen.add(check.device)
        return value


def activity_devices(check: InactivityCheck, devices: Sequence[DeviceSpec]) -> tuple[str, ...]:
    """The ids whose messages count as activity for `check` (its own device included)."""
    if check.activity_devices is not None:
        return tuple(dict.fromkeys((check.device, *check.activity_devices)))
    own = next(d for d in devices if d.id == check.device).ref.location
    return tuple(
        d.id
        for d in devices
        if d.id == check.device
        or (d.ref.location.building == own.building and d.ref.location.unit == own.unit)
    )


def wellness_problems(
    cfg: WellnessConfig, devices: Sequence[DeviceSpec]
) -> list[tuple[tuple[str | int, ...], str]]:
    """(key path, message) for every device a check names that is missing or wrong."""
    by_id = {d.id: d for d in devices}
    out: list[tuple[tuple[str | int, ...], str]] = []
    for i, check in enumerate(cfg.checks):
        spec = by_id.get(check.device)
        if spec is None:
            out.append((("wellness", "checks", i, "device"), f"no device {check.device!r}"))
        elif spec.ref.kind is not Kind.ELDERLY_ALARM:
            out.append(
                (
                    ("wellness", "checks", i, "device"),
                    f"device {check.device!r} is a {spec.ref.kind}, not an elderly_alarm",
                )
            )
        for j, other in enumerate(check.activity_devices or ()):
            if other not in by_id:
                out.append(
                    (("wellness", "checks", i, "activity_devices", j), f"no device {other!r}")
                )
    return out
