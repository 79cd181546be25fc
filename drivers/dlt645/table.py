"""The data identifier table: which values a meter can be asked for, as validated data.

`data_ids.yaml` beside this module lists each value's DI, size, decimals, sign and
unit as DL/T 645-2007 defines them.  `decode_reply` turns a read reply's data field
into a value in the gateway's canonical units (W, not kW).
"""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.dlt645.codec import ParseError, bcd_decode, scaled
from gateway.sdk.model import Unit, ValueType
from gateway.sdk.profiles import load_profile_file

__all__ = ["TABLE_FILE", "DataItem", "DataTable", "Sign", "Value", "decode_reply", "load_table"]

TABLE_FILE = Path(__file__).with_name("data_ids.yaml")

# Meter unit -> (canonical unit, factor).  The standard sends power in kW; the
# platform wants W everywhere, so the conversion lives in one place.
_CANONICAL: dict[str, tuple[Unit, int]] = {
    "kWh": (Unit.KWH, 1),
    "kvarh": (Unit.KVARH, 1),
    "kW": (Unit.W, 1000),
    "kvar": (Unit.VAR, 1000),
    "kVA": (Unit.VA, 1000),
    "V": (Unit.V, 1),
    "A": (Unit.A, 1),
    "Hz": (Unit.HZ, 1),
    "": (Unit.NONE, 1),
}


class Sign(StrEnum):
    """How a value's sign is encoded."""

    UNSIGNED = "unsigned"
    MSB = "msb"  # bit 7 of the most significant byte, as for current and power


class DataItem(BaseModel):
    """One readable value: its DI and how to decode it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    di: int
    unit: str
    bytes: int = Field(ge=1, le=8)
    decimals: int = Field(ge=0, le=8)
    sign: Sign
    type: ValueType
    description: str = ""

    @field_validator("di", mode="before")
    @classmethod
    def _di(cls, value: Any) -> int:
        # Written as the standard prints it ("02010100"); a bare YAML number would lose
        # the leading zeros and be read as decimal, so only strings are accepted.
        if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]{8}", value):
            raise ValueError('write the DI as 8 hexadecimal digits in quotes, e.g. "02010100"')
        return int(value, 16)

    @field_validator("unit")
    @classmethod
    def _unit(cls, value: str) -> str:
        if value not in _CANONICAL:
            raise ValueError(f"unknown unit {value!r} (known: {', '.join(map(repr, _CANONICAL))})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataItem:
        if self.decimals > 2 * self.bytes:
            raise ValueError(f"{self.decimals} decimals do not fit {self.bytes} BCD bytes")
        if self.type is ValueType.COUNTER and self.sign is not Sign.UNSIGNED:
            raise ValueError("a counter cannot be signed")
        return self

    @property
    def canonical_unit(self) -> Unit:
        return _CANONICAL[self.unit][0]

    @property
    def di_text(self) -> str:
        return f"{self.di:08x}"


class DataTable(BaseModel):
    """Every known value, by name; names and DIs are unique."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    items: tuple[DataItem, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> DataTable:
        for key in ("name", "di"):
            seen: set[object] = set()
            for item in self.items:
                value = getattr(item, key)
                if value in seen:
                    shown = f"{value:08x}" if key == "di" else value
                    raise ValueError(f"{key} {shown} appears twice")
                seen.add(value)
        return self

    def get(self, name: str) -> DataItem | None:
        return next((i for i in self.items if i.name == name), None)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.items)


@cache
def load_table(path: Path = TABLE_FILE) -> DataTable:
    """Load and validate a DI table file (the packaged one by default); ProfileError
    names file:line key path of each mistake."""
    return load_profile_file(path, DataTable)


class Value(BaseModel):
    """A decoded reading: exact in the meter's digits, and in canonical units."""

    model_config = ConfigDict(frozen=True)

    item: DataItem
    raw: bytes  # the value bytes as received, without the offset
    exact: Decimal  # in the meter's unit

    @property
    def canonical(self) -> float:
        return float(self.exact * _CANONICAL[self.item.unit][1])


def decode_reply(item: DataItem, data: bytes) -> Value:
    """Decode a normal read reply's data field: the DI echoed, then the value.

    Raises ParseError when the DI is another one (a late reply to an earlier
    request), the length is wrong, or the value is not BCD.
    """
    if len(data) < 4:
        raise ParseError(f"reply data of {len(data)} bytes has no DI")
    di = int.from_bytes(data[:4], "little")
    if di != item.di:
        raise ParseError(f"reply is for DI {di:08x}, not {item.di_text} ({item.name})")
    raw = data[4:]
    if len(raw) != item.bytes:
        raise ParseError(
            f"{item.name} ({item.di_text}) has {len(raw)} value bytes, {item.bytes} expected"
        )
    count = bcd_decode(raw, signed=item.sign is Sign.MSB)
    return Value(item=item, raw=raw, exact=scaled(count, item.decimals))
