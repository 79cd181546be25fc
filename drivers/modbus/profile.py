"""Meter and panel profiles: one YAML file per device model, validated by these models.

A profile lists the device's points: where each one lives (table, address), how its
registers decode (data type, byte order), how to scale it into a canonical unit, and
whether it becomes telemetry or, for on/off inputs, events on each change.  Adding a
device model is adding one file to `profiles/`; nothing here knows any model.
"""

from __future__ import annotations

import re
from collections import defaultdict
from enum import StrEnum
from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.sdk.model import EventType, Kind, Unit, ValueType
from gateway.sdk.problems import Path_
from gateway.sdk.profiles import ProfileLibrary

from .decode import ByteOrder, DataType

__all__ = [
    "MAX_BITS_PER_READ",
    "MAX_REGISTERS_PER_READ",
    "PROFILES",
    "PROFILE_DIR",
    "Emit",
    "Fraction",
    "Point",
    "Profile",
    "Table",
    "cross_problems",
    "load_profile",
    "profile_names",
]

PROFILE_DIR = Path(__file__).parent / "profiles"

# Protocol limits of one read (Modbus Application Protocol V1.1b, 6.1-6.4).
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_FAMILIES = {Kind.METER: "meter.", Kind.SMOKE: "smoke."}


class Table(StrEnum):
    """The four Modbus data tables, by what a meter manual calls them."""

    COIL = "coil"  # 0x, function 1
    DISCRETE = "discrete"  # 1x, function 2
    HOLDING = "holding"  # 4x, function 3
    INPUT = "input"  # 3x, function 4

    @property
    def is_bits(self) -> bool:
        return self in (Table.COIL, Table.DISCRETE)

    @property
    def function_code(self) -> int:
        return {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}[self]

    @property
    def max_per_read(self) -> int:
        return MAX_BITS_PER_READ if self.is_bits else MAX_REGISTERS_PER_READ


class Emit(StrEnum):
    """What a point becomes: a reading in the telemetry, or events on each change."""

    TELEMETRY = "telemetry"
    EVENT = "event"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fraction(_Strict):
    """A second register group added to the point's value: meters that split a total
    into an integer part and a decimal part (e.g. m³ and mL) in separate registers."""

    address: int = Field(ge=0, le=0xFFFF)
    decode: DataType
    order: ByteOrder = ByteOrder.ABCD
    scale: float = Field(description="multiplies the part before it is added, e.g. 1e-6 for mL")

    @field_validator("decode")
    @classmethod
    def _numeric(cls, value: DataType) -> DataType:
        if value in (DataType.BOOL, DataType.BIT):
            raise ValueError("a fraction is a number, not a bit")
        return value


class Point(_Strict):
    """One value of a device: where it is, how it decodes, what it becomes."""

    name: str = Field(description="the reading name, e.g. energy_import")
    table: Table
    address: int = Field(ge=0, le=0xFFFF, description="protocol address, 0-based")
    decode: DataType
    order: ByteOrder = ByteOrder.ABCD
    bit: int | None = Field(None, ge=0, le=15, description="decode: bit only")
    scale: float = 1.0
    offset: float = 0.0
    unit: Unit = Unit.NONE
    type: ValueType = ValueType.GAUGE
    max_rate: float | None = Field(
        None, gt=0, description="counters: largest plausible increase per hour, in unit"
    )
    fraction: Fraction | None = None
    emit: Emit = Emit.TELEMETRY
    on_true: EventType | None = None
    on_false: EventType | None = None
    normal: bool = Field(
        False, description="the input's idle state; true for fail-safe (normally closed) relays"
    )
    data: dict[str, str | int | float | bool] = Field(default_factory=dict)
    note: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "a point name is lower-case letters, digits and '_', e.g. energy_import"
            )
        return value

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: float) -> float:
        if value == 0:
            raise ValueError("scale 0 would publish 0 for every reading")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        is_flag = self.decode in (DataType.BOOL, DataType.BIT)
        if self.table.is_bits != (self.decode is DataType.BOOL):
            raise ValueError(
                f"a {self.table} point decodes as bool, and only coils and discrete inputs do"
                if self.table.is_bits
                else "decode: bool is for coils and discrete inputs; use decode: bit with bit: N"
            )
        if (self.decode is DataType.BIT) != (self.bit is not None):
            raise ValueError("decode: bit needs bit: 0-15, and bit: goes with decode: bit only")
        if self.max_rate is not None and self.type is not ValueType.COUNTER:
            raise ValueError("max_rate applies to counters (type: counter) only")
        if self.fraction is not None and (is_flag or self.table.is_bits):
            raise ValueError("fraction applies to numeric register points only")
        if self.emit is Emit.EVENT:
            if not is_flag:
                raise ValueError("emit: event needs an on/off point (decode: bool or bit)")
            if self.on_true is None and self.on_false is None:
                raise ValueError("emit: event needs on_true, on_false or both")
            if self.type is ValueType.COUNTER or self.unit is not Unit.NONE:
                raise ValueError("an event point has no unit and is not a counter")
        elif self.on_true is not None or self.on_false is not None or self.data or self.normal:
            raise ValueError("on_true, on_false, normal and data go with emit: event")
        if self.type is ValueType.COUNTER and is_flag:
            raise ValueError("an on/off point cannot be a counter")
        return self

    def spans(self) -> list[tuple[Table, int, int]]:
        """(table, address, count) of every register group the point needs."""
        count = 1 if self.table.is_bits else self.decode.registers
        out = [(self.table, self.address, count)]
        if self.fraction is not None:
            out.append((self.table, self.fraction.address, self.fraction.decode.registers))
        return out


class _ProfileFields(_Strict):
    model: str = Field(min_length=1, description="manufacturer and model, as on the label")
    kind: Kind
    source: str = Field(min_length=10, description="the published document the map comes from")
    max_registers_per_read: int = Field(MAX_REGISTERS_PER_READ, ge=1, le=MAX_REGISTERS_PER_READ)
    max_bits_per_read: int = Field(MAX_BITS_PER_READ, ge=1, le=MAX_BITS_PER_READ)
    max_gap: int = Field(10, ge=0, le=MAX_REGISTERS_PER_READ, description="default for devices")
    notes: str = ""
    points: tuple[Point, ...] = Field(min_length=1)

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: Kind) -> Kind:
        if value not in _FAMILIES:
            raise ValueError(f"a Modbus profile is for a meter or smoke device, not {value}")
        return value


class Profile(_ProfileFields):
    """A device model: its points and the limits its firmware puts on one read."""

    @model_validator(mode="after")
    def _points(self) -> Self:
        problems = cross_problems(self)
        if problems:
            raise ValueError("; ".join(message for _, message in problems))
        return self

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        raise KeyError(name)


def cross_problems(profile: _ProfileFields) -> list[tuple[int, str]]:
    """(point index, message) for what no single point shows: names, events, overlaps."""
    problems: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, p in enumerate(profile.points):
        if p.name in seen:
            problems.append((i, f"point name {p.name!r} appears twice"))
        seen.add(p.name)
        for event in (p.on_true, p.on_false):
            if event is not None and not event.startswith((_FAMILIES[profile.kind], "device.")):
                problems.append((i, f"point {p.name}: {event} is not an event of a {profile.kind}"))
        for _, _, count in p.spans():
            limit = profile.max_bits_per_read if p.table.is_bits else profile.max_registers_per_read
            if count > limit:
                problems.append((i, f"point {p.name} needs {count} per read, above {limit}"))
    problems.extend(_overlaps(profile.points))
    return problems


def _overlaps(points: tuple[Point, ...]) -> list[tuple[int, str]]:
    """Points that claim the same register (or the same bit of one register)."""
    owners: dict[tuple[Table, int], list[tuple[int, int | None]]] = defaultdict(list)
    for i, p in enumerate(points):
        for table, address, count in p.spans():
            for a in range(address, address + count):
                owners[(table, a)].append((i, p.bit))
    problems = []
    for (table, address), who in sorted(owners.items()):
        for k, (a, bit_a) in enumerate(who):
            for b, bit_b in who[k + 1 :]:
                if bit_a is not None and bit_b is not None and bit_a != bit_b:
                    continue  # two bits of one status register
                name_a, name_b = points[a].name, points[b].name
                if a == b:
                    problems.append(
                        (a, f"point {name_a}'s fraction overlaps its value at {table} {address}")
                    )
                else:
                    problems.append(
                        (b, f"points {name_a} and {name_b} overlap at {table} {address}")
                    )
    return problems


def _whole_file(doc: Any) -> list[tuple[Path_, str]]:
    # Cross-point problems fail the whole model; each is located here at its point.
    fields = _ProfileFields.model_validate(doc)
    return [(("points", i), message) for i, message in cross_problems(fields)]


# Shipped profiles by name; a site's own by absolute path (/etc/gateway/profiles/x.yaml).
PROFILES = ProfileLibrary(PROFILE_DIR, Profile, site_files=True, whole=_whole_file)


def profile_names() -> tuple[str, ...]:
    """Every shipped profile, by file name without .yaml."""
    return PROFILES.names


def load_profile(name: str) -> Profile:
    """A shipped profile by name, or a site's own by absolute path; validated once.

    KeyError for an unknown name, ProfileError (file:line key path) for a broken file.
    """
    return PROFILES.load(name)
