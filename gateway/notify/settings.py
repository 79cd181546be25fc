"""The `notify:` config section: who is told of an alarm when nobody is looking at a screen.

Validated with the core sections, before any I/O.  Phone numbers are personal data: they
stay in this file and in the modem, never in MQTT, logs or the notifier's record, which
names recipients only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.alarms.rules import Severity

__all__ = ["NotifyConfig", "Recipient", "SmsConfig"]

_PHONE = re.compile(r"^\+?[0-9]{3,20}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Recipient(_Strict):
    """One person on call: named in the record, reached at `phone`."""

    name: str = Field(min_length=1, max_length=40, pattern=r"^[^\x00-\x1f]+$")
    phone: str = Field(description="E.164, e.g. +8613800138000")
    language: Literal["zh", "en"] = "zh"
    # 0: told when an alarm is raised; 1: from its first escalation on (a manager); ...
    from_level: int = Field(0, ge=0, le=100)

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str) -> str:
        if not _PHONE.match(value):
            raise ValueError(
                "must be a phone number in digits, with the country code, like +8613800138000"
                " (no spaces or dashes)"
            )
        return value


class SmsConfig(_Strict):
    """SMS through a GSM/4G modem on a serial port: works with the uplink down."""

    port: str = Field(min_length=1, max_length=256)
    baudrate: int = Field(115200, ge=1200, le=4_000_000)
    pin_file: Path | None = None  # the SIM's PIN, when it has one, in a 0600 file
    on_call: tuple[Recipient, ...] = Field(min_length=1, max_length=50)
    severities: tuple[Severity, ...] = (Severity.CRITICAL, Severity.HIGH)
    max_parts: int = Field(3, ge=1, le=10, description="parts of one concatenated SMS")
    # A message not sent within this long is given up (logged, recorded as failed).
    retry_for_s: float = Field(3600.0, ge=60, le=7 * 86400)
    command_timeout_s: float = Field(2.0, gt=0, le=60)
    send_timeout_s: float = Field(60.0, gt=0, le=300)
    db_path: Path | None = None  # default: notify.db in gateway.state_dir

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        seen: set[str] = set()
        for person in self.on_call:
            if person.name in seen:
                raise ValueError(f"on_call names {person.name!r} twice; names must be unique")
            seen.add(person.name)
        return self


class NotifyConfig(_Strict):
    """Notifiers besides the screens; none by default."""

    sms: SmsConfig | None = None
