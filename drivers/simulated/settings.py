"""The `driver:` section of a simulated device: its scenario, validated before anything runs.

Times are seconds after the driver starts.  The kind of the device comes from the
validation context (`{"kind": ...}`, given by gateway.config), so a meter cannot be
scripted to raise a smoke alarm.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gateway.sdk.model import EventType, Kind

from .profile import profile_names

__all__ = [
    "DEFAULT_TELEMETRY_INTERVAL_S",
    "EVENTS_OF_KIND",
    "EventRule",
    "OfflineWindow",
    "SimulatedSettings",
    "check_event",
]

DEFAULT_TELEMETRY_INTERVAL_S = 10.0

# Which event families each kind of device can produce; device.* fits every kind.
_FAMILIES: Mapping[Kind, tuple[str, ...]] = {
    Kind.DOOR: ("door.", "access."),
    Kind.SMOKE: ("smoke.",),
    Kind.METER: ("meter.",),
    # A motion sensor in a flat belongs to its elderly-care kit (the inactivity check).
    Kind.ELDERLY_ALARM: ("elderly.", "activity."),
}
EVENTS_OF_KIND: Mapping[Kind, tuple[EventType, ...]] = MappingProxyType(
    {
        kind: tuple(e for e in EventType if e.startswith((*prefixes, "device.")))
        for kind, prefixes in _FAMILIES.items()
    }
)
_NOUN = {
    Kind.DOOR: "a door",
    Kind.SMOKE: "a smoke detector",
    Kind.METER: "a meter",
    Kind.ELDERLY_ALARM: "an elderly alarm",
}


def check_event(kind: Kind | None, value: Any) -> EventType:
    """The EventType named by `value`, if it exists and a device of `kind` can emit it.

    Raises ValueError with a message meant for the person who wrote the config.
    """
    known = [str(e) for e in (EVENTS_OF_KIND[kind] if kind is not None else EventType)]
    try:
        event = EventType(value)
    except ValueError:
        raise ValueError(f"unknown event type {value!r} (known: {', '.join(known)})") from None
    if kind is not None and event not in EVENTS_OF_KIND[kind]:
        raise ValueError(
            f"{event} is not an event of {_NOUN[kind]} ({_NOUN[kind]} emits: {', '.join(known)})"
        )
    return event


def _kind(info: ValidationInfo) -> Kind | None:
    ctx = info.context
    if isinstance(ctx, Mapping) and ctx.get("kind") is not None:
        return Kind(ctx["kind"])
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventRule(_Strict):
    """One scripted event: once (`at_s`) or repeating (`every_s`), optionally paired."""

    type: EventType
    at_s: float | None = Field(None, ge=0, description="once, this many seconds after start")
    every_s: float | None = Field(None, gt=0, description="repeating with this period")
    start_s: float | None = Field(None, ge=0, description="every_s: first time (default every_s)")
    jitter_s: float = Field(0.0, ge=0, description="every_s: each time moves by up to ± this")
    data: dict[str, JsonValue] = Field(default_factory=dict)
    then: EventType | None = Field(None, description="a second event after each one")
    then_after_s: float | None = Field(None, gt=0)

    @field_validator("type", "then", mode="before")
    @classmethod
    def _fits_kind(cls, value: Any, info: ValidationInfo) -> Any:
        return None if value is None else check_event(_kind(info), value)

    @model_validator(mode="after")
    def _timing(self) -> Self:
        if (self.at_s is None) == (self.every_s is None):
            raise ValueError("give exactly one of at_s (once) or every_s (repeating)")
        if self.every_s is None and ("start_s" in self.model_fields_set or self.jitter_s):
            raise ValueError("start_s and jitter_s go with every_s, not at_s")
        if (self.then is None) != (self.then_after_s is None):
            raise ValueError("then and then_after_s go together")
        if self.every_s is not None:
            # Keeps each occurrence after the previous one, and each pair before the next.
            if self.jitter_s >= self.every_s / 2:
                raise ValueError(f"jitter_s must be less than half of every_s ({self.every_s} s)")
            room = self.every_s - 2 * self.jitter_s
            if self.then_after_s is not None and self.then_after_s >= room:
                raise ValueError(
                    f"then_after_s must be shorter than every_s - 2 x jitter_s ({room:g} s), "
                    "or a pair overlaps the next one"
                )
        return self

    @property
    def first_s(self) -> float:
        """When the event first happens, before jitter."""
        if self.at_s is not None:
            return self.at_s
        assert self.every_s is not None
        return self.every_s if self.start_s is None else self.start_s


class OfflineWindow(_Strict):
    """A time the device is unreachable: availability goes false, nothing is emitted."""

    at_s: float = Field(ge=0)
    for_s: float = Field(gt=0)

    @property
    def end_s(self) -> float:
        return self.at_s + self.for_s


class SimulatedSettings(_Strict):
    """A simulated device's scenario: scripted events, outages, and for meters a profile."""

    # Meters only.  Field order matters: rate_hz's check reads telemetry_interval_s.
    profile: str | None = Field(None, validate_default=True, description="profiles/NAME.yaml")
    telemetry_interval_s: float | None = Field(None, gt=0, description="default 10 s")
    rate_hz: float | None = Field(None, gt=0, le=1000, description="benchmarks: readings per s")
    scale: float = Field(1.0, gt=0, description="multiplies the profile's demand")
    utc_offset_h: float = Field(0.0, ge=-12, le=14, description="the profile's local time")
    # Every kind.
    events: tuple[EventRule, ...] = ()
    offline: tuple[OfflineWindow, ...] = ()
    seed: int = 0

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = _kind(info)
        known = ", ".join(profile_names())
        if value is None:
            if kind is Kind.METER:
                raise ValueError(f"a meter needs a profile (one of: {known})")
            return None
        if kind is not None and kind is not Kind.METER:
            raise ValueError(f"applies to meters only, and this device is {_NOUN[kind]}")
        if value not in profile_names():
            raise ValueError(f"unknown profile {value!r} (known: {known})")
        return value

    @field_validator("telemetry_interval_s", "rate_hz", "scale", "utc_offset_h")
    @classmethod
    def _meter_only(cls, value: float, info: ValidationInfo) -> float:
        kind = _kind(info)
        if kind is not None and kind is not Kind.METER:
            raise ValueError(f"applies to meters only, and this device is {_NOUN[kind]}")
        if info.field_name == "rate_hz" and info.data.get("telemetry_interval_s") is not None:
            raise ValueError("give telemetry_interval_s or rate_hz, not both")
        return value

    @field_validator("offline")
    @classmethod
    def _apart(cls, value: tuple[OfflineWindow, ...]) -> tuple[OfflineWindow, ...]:
        order = sorted(range(len(value)), key=lambda i: value[i].at_s)
        for prev, cur in itertools.pairwise(order):
            if value[cur].at_s <= value[prev].end_s:
                raise ValueError(
                    f"offline[{cur}] starts at {value[cur].at_s:g} s, before offline[{prev}] "
                    f"is over ({value[prev].end_s:g} s); merge them into one window"
                )
        return value

    @property
    def telemetry_period_s(self) -> float | None:
        """Seconds between readings, or None for a device that sends no telemetry."""
        if self.profile is None:
            return None
        if self.rate_hz is not None:
            return 1.0 / self.rate_hz
        return self.telemetry_interval_s or DEFAULT_TELEMETRY_INTERVAL_S
