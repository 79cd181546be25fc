"""The `driver:` section of a GPIO line: which line, how it is wired, and what it means.

Validated before anything touches a chip.  The device's kind comes from the validation
context (`{"kind": ...}`, given by gateway.config), so a smoke relay cannot be declared
on a door.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gateway.sdk.devicechecks import SharedLine
from gateway.sdk.driver import DeviceProblem, DeviceSpec
from gateway.sdk.model import Kind

__all__ = [
    "MAX_LINE_ATTRIBUTES",
    "ROLES_OF_KIND",
    "Active",
    "Bias",
    "Contact",
    "GpioSettings",
    "Role",
    "check_devices",
]


class Role(StrEnum):
    """What a change of the input means."""

    DOOR_CONTACT = "door_contact"
    REQUEST_TO_EXIT = "request_to_exit"
    SMOKE_RELAY = "smoke_relay"
    SOS_BUTTON = "sos_button"
    PULL_CORD = "pull_cord"
    RELAY = "relay"  # an output: a buzzer, a light, a door strike; switched by commands


class Contact(StrEnum):
    """The contact's state at rest: `no` closes when active, `nc` opens when active."""

    NO = "no"
    NC = "nc"


class Bias(StrEnum):
    """The chip's internal resistor: pull_up for contacts to GND, pull_down for contacts to 3V3."""

    PULL_UP = "pull_up"
    PULL_DOWN = "pull_down"
    NONE = "none"  # an external pull-up: the contact goes to GND


class Active(StrEnum):
    """The level that switches a relay output on: relay boards are often active-low."""

    HIGH = "high"
    LOW = "low"


# A relay output fits any kind: it is filed under what it serves (an office buzzer for
# the elderly alarms, a sounder for the smoke detectors).
ROLES_OF_KIND: Mapping[Kind, tuple[Role, ...]] = {
    Kind.DOOR: (Role.DOOR_CONTACT, Role.REQUEST_TO_EXIT, Role.RELAY),
    Kind.SMOKE: (Role.SMOKE_RELAY, Role.RELAY),
    Kind.ELDERLY_ALARM: (Role.SOS_BUTTON, Role.PULL_CORD, Role.RELAY),
    Kind.METER: (Role.RELAY,),
}
_INPUT_KEYS = frozenset({"contact", "bias", "debounce_ms"})
_DOOR_KEYS = frozenset({"rex_line", "rex_contact", "grant_window_s", "held_open_s", "grant_from"})


def _kind(info: ValidationInfo) -> Kind | None:
    ctx = info.context
    if isinstance(ctx, Mapping) and ctx.get("kind") is not None:
        return Kind(ctx["kind"])
    return None


class GpioSettings(BaseModel):
    """One dry-contact input (a door also its exit button), or one relay output."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    chip: str = Field("/dev/gpiochip0", description="the GPIO character device")
    line: int = Field(ge=0, le=1023, description="line offset on the chip")
    role: Role
    contact: Contact = Contact.NO
    bias: Bias = Bias.PULL_UP
    debounce_ms: int = Field(20, ge=0, le=5000)
    # Door contacts only.
    rex_line: int | None = Field(
        None, ge=0, le=1023, description="request-to-exit on the same chip"
    )
    rex_contact: Contact = Contact.NO
    grant_window_s: float = Field(10.0, gt=0, le=300)
    held_open_s: float = Field(30.0, gt=0, le=86400)
    # Access readers (their device ids) whose `access.granted` lets this door open;
    # checked against the configured devices by `check_devices`.
    grant_from: tuple[str, ...] = ()
    # Relay outputs only.
    active: Active = Active.HIGH

    @field_validator("contact", "rex_contact", mode="before")
    @classmethod
    def _yaml_no(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `no` as false; installers write `contact: no`.
        return "no" if value is False else value

    @field_validator("role")
    @classmethod
    def _fits_kind(cls, value: Role, info: ValidationInfo) -> Role:
        kind = _kind(info)
        if kind is not None and value not in ROLES_OF_KIND[kind]:
            allowed = ", ".join(ROLES_OF_KIND[kind]) or "none: a meter has no dry contact"
            raise ValueError(f"{value} is not a role of a {kind} device (allowed: {allowed})")
        return value

    @model_validator(mode="after")
    def _door_only(self) -> Self:
        door_keys = _DOOR_KEYS & self.model_fields_set
        if self.role is not Role.DOOR_CONTACT and door_keys:
            raise ValueError(f"{', '.join(sorted(door_keys))} only apply to role door_contact")
        if self.role is Role.RELAY and (keys := _INPUT_KEYS & self.model_fields_set):
            raise ValueError(f"{', '.join(sorted(keys))} only apply to inputs, not a relay")
        if self.role is not Role.RELAY and "active" in self.model_fields_set:
            raise ValueError("active only applies to role relay")
        if len(set(self.grant_from)) != len(self.grant_from):
            raise ValueError("grant_from names a reader twice")
        if self.rex_line is not None and self.rex_line == self.line:
            raise ValueError(f"rex_line {self.rex_line} is the door contact's own line")
        return self


# The kernel takes at most 10 attributes per line request (GPIO_V2_LINE_NUM_ATTRS_MAX);
# beyond that every line of the chip fails with E2BIG.
MAX_LINE_ATTRIBUTES = 10


def _attributes(s: GpioSettings) -> tuple[tuple[str, ...], tuple[int, ...], bool]:
    """What one device adds to its chip's request: flag sets, debounce periods, an output.

    libgpiod makes one attribute per flag set beyond the first, one per distinct
    non-zero debounce period, and one for all output values.
    """
    if s.role is Role.RELAY:
        return ("output",), (), True
    return (f"input {s.bias}",), ((s.debounce_ms,) if s.debounce_ms else ()), False


def _chip_problems(mine: Sequence[DeviceSpec]) -> list[DeviceProblem]:
    """Two devices on one line of a chip, and chips whose request the kernel would refuse."""
    problems: list[DeviceProblem] = []
    chips = SharedLine("chip")
    flags: dict[str, set[str]] = {}
    debounces: dict[str, set[int]] = {}
    outputs: dict[str, bool] = {}
    for spec in mine:
        s = spec.settings_as(GpioSettings)
        for key, line in (("line", s.line), ("rex_line", s.rex_line)):
            if line is not None:
                chips.claim(spec, s.chip, "line", line, "one wire, one device", path=key)
        new_flags, new_debounce, output = _attributes(s)
        chip_flags = flags.setdefault(s.chip, set()) | set(new_flags)
        chip_debounce = debounces.setdefault(s.chip, set()) | set(new_debounce)
        chip_output = outputs.get(s.chip, False) or output
        needed = len(chip_flags) - 1 + len(chip_debounce) + int(chip_output)
        if needed > MAX_LINE_ATTRIBUTES:
            periods = ", ".join(str(d) for d in sorted(debounces[s.chip]))
            problems.append(
                DeviceProblem(
                    spec.id,
                    ("debounce_ms",),
                    f"{s.chip} cannot take this line's settings: the kernel allows "
                    f"{MAX_LINE_ATTRIBUTES} different line settings per chip, and its lines "
                    f"already use debounce_ms {periods} and {len(flags[s.chip])} kinds of "
                    "line; use a debounce_ms another line on the chip has",
                )
            )
            continue
        flags[s.chip], debounces[s.chip], outputs[s.chip] = chip_flags, chip_debounce, chip_output
    return chips.problems + problems


def check_devices(mine: Sequence[DeviceSpec], every: Sequence[DeviceSpec]) -> list[DeviceProblem]:
    """Doors' `grant_from` names door devices; lines are not shared; each chip fits a request."""
    kinds = {d.id: d.ref.kind for d in every}
    problems = _chip_problems(mine)
    for spec in mine:
        settings = spec.settings_as(GpioSettings)
        for i, reader in enumerate(settings.grant_from):
            kind = kinds.get(reader)
            if kind is None:
                msg = f"no device {reader!r} (grant_from names the access readers of this door)"
            elif reader == spec.id:
                msg = "a door cannot grant itself; name its access reader"
            elif kind is not Kind.DOOR:
                msg = f"device {reader!r} is of kind {kind}, not a door (an access reader)"
            else:
                continue
            problems.append(DeviceProblem(spec.id, ("grant_from", i), msg))
    return problems
