"""The `driver:` section of a GPIO input: which line, how it is wired, and what it means.

Validated before anything touches a chip.  The device's kind comes from the validation
context (`{"kind": ...}`, given by gateway.config), so a smoke relay cannot be declared
on a door.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from gateway.model import Kind

__all__ = ["ROLES_OF_KIND", "Bias", "Contact", "GpioSettings", "Role"]


class Role(StrEnum):
    """What a change of the input means."""

    DOOR_CONTACT = "door_contact"
    REQUEST_TO_EXIT = "request_to_exit"
    SMOKE_RELAY = "smoke_relay"
    SOS_BUTTON = "sos_button"
    PULL_CORD = "pull_cord"


class Contact(StrEnum):
    """The contact's state at rest: `no` closes when active, `nc` opens when active."""

    NO = "no"
    NC = "nc"


class Bias(StrEnum):
    """The chip's internal resistor: pull_up for contacts to GND, pull_down for contacts to 3V3."""

    PULL_UP = "pull_up"
    PULL_DOWN = "pull_down"
    NONE = "none"  # an external pull-up: the contact goes to GND


ROLES_OF_KIND: Mapping[Kind, tuple[Role, ...]] = {
    Kind.DOOR: (Role.DOOR_CONTACT, Role.REQUEST_TO_EXIT),
    Kind.SMOKE: (Role.SMOKE_RELAY,),
    Kind.ELDERLY_ALARM: (Role.SOS_BUTTON, Role.PULL_CORD),
    Kind.METER: (),
}


def _kind(info: ValidationInfo) -> Kind | None:
    ctx = info.context
    if isinstance(ctx, Mapping) and ctx.get("kind") is not None:
        return Kind(ctx["kind"])
    return None


class GpioSettings(BaseModel):
    """One dry-contact input (and for a door, optionally its request-to-exit input)."""

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
        door_keys = {
            "rex_line",
            "rex_contact",
            "grant_window_s",
            "held_open_s",
        } & self.model_fields_set
        if self.role is not Role.DOOR_CONTACT and door_keys:
            raise ValueError(f"{', '.join(sorted(door_keys))} only apply to role door_contact")
        if self.rex_line is not None and self.rex_line == self.line:
            raise ValueError(f"rex_line {self.rex_line} is the door contact's own line")
        return self

    @property
    def debounce_ns(self) -> int:
        return self.debounce_ms * 1_000_000
