"""The `driver:` section of a Modbus device, validated before anything connects.

A device names its bus (a serial port, or a TCP endpoint), its unit id and its profile.
Devices that name the same serial port or the same TCP endpoint share one connection;
`validate_group` checks that they agree on how to talk on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)

from gateway.sdk.driver import DeviceProblem, DeviceSpec, SerialPortUse
from gateway.sdk.model import Kind
from gateway.sdk.profiles import ProfileError

from .profile import Profile, load_profile, profile_names

__all__ = [
    "BusKey",
    "Framer",
    "ModbusSettings",
    "Parity",
    "SerialBus",
    "TcpBus",
    "bits_per_char",
    "check_devices",
    "group_problems",
    "serial_ports",
    "validate_group",
]

BusKey = tuple[str, ...]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Parity(StrEnum):
    NONE = "N"
    EVEN = "E"
    ODD = "O"


class Framer(StrEnum):
    """`socket` is Modbus TCP (MBAP header); `rtu` is RTU frames over TCP (serial servers)."""

    SOCKET = "socket"
    RTU = "rtu"


def bits_per_char(parity: Parity, stopbits: int, bytesize: int = 8) -> int:
    """Bits one character takes on the line: start, data, parity, stop."""
    return 1 + bytesize + (0 if parity is Parity.NONE else 1) + stopbits


class SerialBus(_Strict):
    """An RS-485 line on a serial port: RTU framing."""

    port: str = Field(min_length=1, description="e.g. /dev/ttyUSB0 or /dev/serial/by-id/...")
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Parity = Parity.NONE
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = Field(0.5, gt=0, le=10, description="per request, this device")
    inter_frame_gap_ms: float | None = Field(
        None, ge=0, le=1000, description="silence before each request; default 3.5 characters"
    )

    @field_validator("port")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("give the serial port's absolute path, e.g. /dev/ttyUSB0")
        return value

    @property
    def key(self) -> BusKey:
        return ("serial", self.port)

    @property
    def gap_s(self) -> float:
        """Silence kept between frames: as configured, else 3.5 characters (1.75 ms above 19200)."""
        if self.inter_frame_gap_ms is not None:
            return self.inter_frame_gap_ms / 1000
        if self.baud > 19200:
            return 0.00175
        return 3.5 * bits_per_char(self.parity, self.stopbits, self.bytesize) / self.baud

    def describe(self) -> str:
        return f"{self.port} {self.baud} {self.bytesize}{self.parity}{self.stopbits}"


class TcpBus(_Strict):
    """A Modbus TCP device or a TCP-to-RS485 gateway."""

    host: str = Field(min_length=1)
    port: int = Field(502, ge=1, le=65535)
    framer: Framer = Framer.SOCKET
    timeout_s: float = Field(1.0, gt=0, le=10, description="per request, this device")
    inter_frame_gap_ms: float = Field(0.0, ge=0, le=1000)

    @property
    def key(self) -> BusKey:
        return ("tcp", self.host, str(self.port))

    @property
    def gap_s(self) -> float:
        return self.inter_frame_gap_ms / 1000

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.framer})"


def _bus_tag(value: Any) -> str:
    if isinstance(value, Mapping):
        return "tcp" if "host" in value else "serial"
    if isinstance(value, TcpBus):
        return "tcp"
    return "serial"


Bus = Annotated[
    Annotated[SerialBus, Tag("serial")] | Annotated[TcpBus, Tag("tcp")],
    Discriminator(_bus_tag),
]


def _kind(info: ValidationInfo) -> Kind | None:
    ctx = info.context
    if isinstance(ctx, Mapping) and ctx.get("kind") is not None:
        return Kind(ctx["kind"])
    return None


class ModbusSettings(_Strict):
    """One Modbus device: its bus, unit id, profile and polling."""

    bus: Bus
    unit_id: int = Field(ge=0, le=255, description="1-247 on RS-485")
    profile: str = Field(
        description="a shipped profile's name (profiles/NAME.yaml without .yaml), "
        "or the absolute path of a site's own profile file"
    )
    poll_interval_s: float = Field(10.0, ge=0.05, le=86400)
    max_gap: int | None = Field(
        None, ge=0, le=124, description="largest hole a read may span, in registers"
    )
    offline_after: int = Field(3, ge=1, le=100, description="consecutive failed polls")
    backoff_max_s: float = Field(300.0, ge=0.05, le=86400, description="longest retry delay")

    @field_validator("profile")
    @classmethod
    def _profile(cls, value: str, info: ValidationInfo) -> str:
        if value.startswith("/"):
            try:
                prof = load_profile(value)
            except ProfileError as exc:
                raise ValueError(f"profile file {value} is not valid: {exc}") from None
        elif value not in profile_names():
            raise ValueError(
                f"unknown profile {value!r} (known: {', '.join(profile_names())}; "
                "or give the absolute path of a profile file)"
            )
        else:
            prof = load_profile(value)
        kind = _kind(info)
        if kind is not None and prof.kind is not kind:
            raise ValueError(
                f"profile {value} is for a {prof.kind} device, and this one is a {kind}"
            )
        return value

    @field_validator("unit_id")
    @classmethod
    def _unit(cls, value: int, info: ValidationInfo) -> int:
        # `bus` is declared first, so it is validated by now (absent if it was wrong).
        if isinstance(info.data.get("bus"), SerialBus) and not 1 <= value <= 247:
            raise ValueError(f"{value}: an RS-485 device has an address from 1 to 247")
        return value

    @property
    def profile_model(self) -> Profile:
        return load_profile(self.profile)

    @property
    def gap(self) -> int:
        """The largest hole a read may bridge: this device's max_gap, else the profile's."""
        return self.max_gap if self.max_gap is not None else self.profile_model.max_gap


# Serial line settings every device of one port must share; timeout_s may differ.
_LINE = ("baud", "parity", "stopbits", "bytesize", "inter_frame_gap_ms")
_TCP = ("framer", "inter_frame_gap_ms")


def group_problems(devices: Sequence[DeviceSpec]) -> list[DeviceProblem]:
    """Each problem between Modbus devices sharing one bus, with the key it is about."""
    problems: list[DeviceProblem] = []
    first: dict[BusKey, DeviceSpec] = {}
    units: dict[tuple[BusKey, int], str] = {}
    for spec in devices:
        s = spec.settings
        if not isinstance(s, ModbusSettings):
            continue
        key = s.bus.key
        ref = first.setdefault(key, spec)
        ref_settings = ref.settings
        assert isinstance(ref_settings, ModbusSettings)
        names = _LINE if isinstance(s.bus, SerialBus) else _TCP
        for name in names:
            mine, theirs = getattr(s.bus, name), getattr(ref_settings.bus, name)
            if mine != theirs:
                problems.append(
                    DeviceProblem(
                        spec.id,
                        ("bus", name),
                        f"bus.{name} is {mine}, but {ref.id} on the same bus "
                        f"({s.bus.describe()}) has {theirs}; devices on one bus share its settings",
                    )
                )
        other = units.setdefault((key, s.unit_id), spec.id)
        if other != spec.id:
            problems.append(
                DeviceProblem(
                    spec.id,
                    ("unit_id",),
                    f"unit_id {s.unit_id} is already used by {other} on "
                    f"{s.bus.describe()}; each device on a bus needs its own address",
                    # Either meter may be the one answering: neither reading is safe.
                    also=(other,),
                )
            )
    return problems


def validate_group(devices: Sequence[DeviceSpec]) -> list[str]:
    """Problems between Modbus devices sharing one bus: line settings, duplicate unit ids.

    Each message starts with the id of the device it is about ("meter-2: ...").  Devices
    of other drivers are ignored, so the whole config's devices may be passed.
    """
    return [f"{p.device_id}: {p.message}" for p in group_problems(devices)]


def check_devices(
    mine: Sequence[DeviceSpec], everyone: Sequence[DeviceSpec]
) -> list[DeviceProblem]:
    """The driver's config-time check (`DriverInfo.check_devices`): buses agree."""
    return group_problems(mine)


def serial_ports(spec: DeviceSpec) -> list[SerialPortUse]:
    """The RTU bus's port (`DriverInfo.serial_ports`); a TCP bus opens none."""
    bus = spec.settings_as(ModbusSettings).bus
    return [SerialPortUse(bus.port, ("bus", "port"))] if isinstance(bus, SerialBus) else []
