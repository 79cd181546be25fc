"""The `driver:` section of an OSDP reader: its bus, address, keys and privacy choices.

Validated before anything opens a port.  Secrets (the reader's SCBK and the site's
pseudonym secret) are `SecretRef`s to a file or an environment variable, never inline.
`check_devices` then checks readers against each other (one baud rate per bus, one
address per reader) and that the secret files exist and hold what they should.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.sdk.driver import DeviceProblem, DeviceSpec
from gateway.sdk.secrets import SecretRef, refuse_inline

__all__ = [
    "Feedback",
    "OsdpSettings",
    "SecretError",
    "SecureChannel",
    "check_devices",
    "read_scbk",
    "read_site_secret",
]


class SecureChannel(StrEnum):
    """How the control panel talks to the reader."""

    OFF = "off"  # plain text: card data readable on the wire; bench use only
    SCBK = "scbk"  # secure channel with the reader's own key (SCBK); refused otherwise
    INSTALL = "install"  # first contact with SCBK-D, then the panel sets the SCBK (KEYSET)


class Feedback(StrEnum):
    """What the reader shows on a grant (green) or a denial (red), if it declares it."""

    LED_AND_BUZZER = "led_and_buzzer"
    LED = "led"
    NONE = "none"


class SecretError(ValueError):
    """A secret file that is missing, unreadable or not in the expected form."""


class OsdpSettings(BaseModel):
    """One OSDP reader (a peripheral device) on an RS-485 bus the gateway controls."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(min_length=1, description="serial port of the RS-485 adapter")
    baudrate: Literal[9600, 19200, 38400, 57600, 115200] = 9600
    address: int = Field(ge=0, le=126, description="the reader's OSDP address (0x7F is broadcast)")
    secure_channel: SecureChannel = SecureChannel.SCBK
    scbk: SecretRef | None = Field(None, description="file with the reader's 16-byte key as hex")
    site_secret: SecretRef = Field(
        description="the site's pseudonym secret (same on every gateway)"
    )
    allow_list: Path | None = Field(
        None, description="file of allowed card pseudonyms; none: report card reads only"
    )
    publish_raw_card: bool = False  # publishes card numbers: only where the site's DPO agreed
    publish_raw_pin: bool = False  # publishes PIN digits: same
    feedback: Feedback = Feedback.LED_AND_BUZZER
    keypad_timeout_s: float = Field(5.0, gt=0, le=60)
    keypad_max_digits: int = Field(12, ge=1, le=64)
    retry_s: float = Field(10.0, ge=0.2, le=3600, description="first retry of an offline reader")

    _no_inline = field_validator("scbk", "site_secret", mode="before")(refuse_inline)

    @model_validator(mode="after")
    def _key_fits_mode(self) -> Self:
        if self.secure_channel is SecureChannel.OFF and self.scbk is not None:
            raise ValueError("scbk is given but secure_channel is off; remove one of them")
        if self.secure_channel is not SecureChannel.OFF and self.scbk is None:
            raise ValueError(
                f"secure_channel {self.secure_channel} needs scbk: {{file: PATH}} "
                "(16 random bytes as 32 hex digits, e.g. `openssl rand -hex 16`)"
            )
        return self


def read_scbk(ref: SecretRef) -> bytes:
    """The 16-byte secure channel base key from its secret (32 hex digits)."""
    try:
        text = ref.read().strip()
    except (OSError, LookupError) as exc:
        raise SecretError(f"cannot read the SCBK: {exc}") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SecretError("the SCBK is not hex (want 32 hex digits)") from None
    if len(key) != 16:
        raise SecretError(f"the SCBK has {len(key)} bytes; want 16 (32 hex digits)")
    return key


def read_site_secret(ref: SecretRef) -> bytes:
    """The site's pseudonym secret as bytes (at least 16)."""
    try:
        value = ref.read().encode("utf-8")
    except (OSError, LookupError) as exc:
        raise SecretError(f"cannot read the site secret: {exc}") from exc
    if len(value) < 16:
        raise SecretError(
            f"the site secret has {len(value)} bytes; use at least 16 random bytes "
            "(e.g. `openssl rand -base64 32`)"
        )
    return value


def _readable(ref: SecretRef) -> bool:
    return ref.file is not None or (ref.env is not None and ref.env in os.environ)


def _allow_list_problem(path: Path) -> str | None:
    """Why the driver could not read the allow list whole; a missing one is allowed
    (every card is denied until it exists)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        return f"cannot reach {path}: {getattr(exc, 'strerror', None) or exc}"
    # Read whole at every change: /dev/zero or a FIFO would stall the reader.
    return None if stat.S_ISREG(mode) else f"{path} is not a regular file"


def check_devices(mine: Sequence[DeviceSpec], _all: Sequence[DeviceSpec]) -> list[DeviceProblem]:
    """Readers against each other (bus speed, addresses) and their secrets, before any I/O."""
    problems: list[DeviceProblem] = []
    buses: dict[str, tuple[DeviceSpec, dict[int, str]]] = {}
    for spec in mine:
        s = spec.settings_as(OsdpSettings)
        # Readers on one port share one bus and one control panel (as the driver groups them).
        first, addresses = buses.setdefault(s.port, (spec, {}))
        if first.settings_as(OsdpSettings).baudrate != s.baudrate:
            problems.append(
                DeviceProblem(
                    spec.id,
                    ("baudrate",),
                    f"{s.port} runs at {first.settings_as(OsdpSettings).baudrate} for device {first.id}; "
                    "every reader on one bus uses the same baud rate",
                )
            )
        if s.address in addresses:
            problems.append(
                DeviceProblem(
                    spec.id,
                    ("address",),
                    f"address {s.address} on {s.port} is already device {addresses[s.address]}",
                    # Both readers answer at that address: neither's cards are safe to use.
                    also=(addresses[s.address],),
                )
            )
        addresses.setdefault(s.address, spec.id)
        why = _allow_list_problem(s.allow_list) if s.allow_list is not None else None
        if why is not None:
            problems.append(DeviceProblem(spec.id, ("allow_list",), why))
        # A variable not set where `gateway validate` runs may be set in the service: those
        # are checked at start (the reader is then not started, with the reason).
        if s.scbk is not None and _readable(s.scbk):
            try:
                read_scbk(s.scbk)
            except SecretError as exc:
                problems.append(DeviceProblem(spec.id, ("scbk",), str(exc)))
        if _readable(s.site_secret):
            try:
                read_site_secret(s.site_secret)
            except SecretError as exc:
                problems.append(DeviceProblem(spec.id, ("site_secret",), str(exc)))
    return problems
