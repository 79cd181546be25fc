"""A receiver-paired device's `driver:` section, validated before any port is opened."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from drivers.serial_line.profile import Profile, load_profile, profile_names
from gateway.sdk.devicechecks import SharedLine
from gateway.sdk.driver import DeviceProblem, DeviceSpec

__all__ = ["DEFAULT_PROFILE", "SerialLineSettings", "check_devices"]

DEFAULT_PROFILE = "rf433_text"


class SerialLineSettings(BaseModel):
    """One transmitter (pendant, smoke detector) heard by the receiver on `port`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(min_length=1, description="the receiver's serial port, e.g. /dev/ttyUSB0")
    baud: int | None = Field(None, gt=0, description="default: the profile's")
    profile: str = DEFAULT_PROFILE
    code: str = Field(min_length=1, description="the transmitter's code, as the receiver prints it")
    dedupe_s: float | None = Field(
        None,
        ge=0,
        le=600,
        description="repeats closer than this are one press; default: the profile's",
    )

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str) -> str:
        if value not in profile_names():
            raise ValueError(f"unknown profile {value!r} (known: {', '.join(profile_names())})")
        return value

    @field_validator("code", mode="before")
    @classmethod
    def _code_text(cls, value: Any) -> Any:
        if isinstance(value, int):
            # YAML reads 012345 as a number and drops the leading zero.
            raise ValueError('write the code in quotes, as the receiver prints it: code: "0A1B2C"')
        return value

    @field_validator("code")
    @classmethod
    def _code_shape(cls, value: str, info: ValidationInfo) -> str:
        name = info.data.get("profile")
        if name is None:
            return value  # the profile itself is wrong; that error is reported
        profile = load_profile(name)
        if not profile.code_ok(value):
            raise ValueError(
                f"code {value!r} does not look like a {name} code "
                f"(pattern {profile.code_pattern}); copy it from the receiver's output"
            )
        return value

    @property
    def receiver(self) -> Profile:
        return load_profile(self.profile)

    @property
    def line_baud(self) -> int:
        return self.baud if self.baud is not None else self.receiver.baud

    @property
    def window_s(self) -> float:
        return self.dedupe_s if self.dedupe_s is not None else self.receiver.dedupe_s


def check_devices(mine: Sequence[DeviceSpec], _every: Sequence[DeviceSpec]) -> list[DeviceProblem]:
    """Devices heard by one receiver agree on how it talks, and each has its own code.

    One port is one receiver: one profile, one baud rate, one repeat window.  Two
    devices with one code cannot be told apart: a press would be filed under either
    flat, so both are in conflict.
    """
    receivers = SharedLine("receiver")
    for spec in mine:
        s = spec.settings_as(SerialLineSettings)
        receivers.settings(
            spec, s.port, {"profile": s.profile, "baud": s.line_baud, "dedupe_s": s.window_s}
        )
        receivers.claim(
            spec,
            s.port,
            "code",
            s.code,
            "a press could be either device: give each transmitter its own code",
        )
    return receivers.problems
