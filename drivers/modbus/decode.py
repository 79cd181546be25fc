"""Register decoding: 16-bit Modbus registers to numbers, per data type and byte order.

Pure functions, no I/O.  A register arrives from the wire as a 16-bit word, high byte
first.  Meter manuals name the order of a multi-register value's bytes with letters,
A being the most significant byte of the value as the meter computes it:

- ABCD: big-endian, the Modbus default (high word first, high byte first);
- CDAB: words swapped (low word first), bytes in each word high first;
- BADC: bytes swapped inside each word, words high first;
- DCBA: fully little-endian.

The same names apply to 64-bit values (ABCD = all eight bytes big-endian, CDAB = the
four words in reverse order, and so on) and to 16-bit values (BADC and DCBA swap the
register's two bytes).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from enum import StrEnum

__all__ = [
    "ByteOrder",
    "DataType",
    "DecodeError",
    "Decoder",
    "decode",
    "decoder",
    "encode",
    "to_canonical_bytes",
]


class DecodeError(ValueError):
    """Registers that cannot hold a value of the requested type (bad BCD digit, wrong count)."""


class DataType(StrEnum):
    """How a point's registers or bits encode its value."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BCD16 = "bcd16"  # four decimal digits in one register, one per nibble
    BCD32 = "bcd32"  # eight decimal digits in two registers
    BOOL = "bool"  # one coil or discrete input
    BIT = "bit"  # one bit of a holding or input register

    @property
    def registers(self) -> int:
        """How many 16-bit registers a value occupies; 1 for a bit in a register, 0 for a coil."""
        return _REGISTERS[self]

    @property
    def is_float(self) -> bool:
        return self in (DataType.FLOAT32, DataType.FLOAT64)


_REGISTERS = {
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT32: 2,
    DataType.FLOAT64: 4,
    DataType.BCD16: 1,
    DataType.BCD32: 2,
    DataType.BOOL: 0,
    DataType.BIT: 1,
}

# struct codes of the numeric types, applied to canonical (big-endian) bytes.
_STRUCT = {
    DataType.INT16: ">h",
    DataType.UINT16: ">H",
    DataType.INT32: ">i",
    DataType.UINT32: ">I",
    DataType.INT64: ">q",
    DataType.UINT64: ">Q",
    DataType.FLOAT32: ">f",
    DataType.FLOAT64: ">d",
}


class ByteOrder(StrEnum):
    """Byte order of a multi-byte value, in the letters meter manuals use."""

    ABCD = "ABCD"
    CDAB = "CDAB"
    BADC = "BADC"
    DCBA = "DCBA"


def _wire_bytes(registers: Sequence[int]) -> bytes:
    for r in registers:
        if not 0 <= r <= 0xFFFF:
            raise DecodeError(f"register value {r} is not a 16-bit word")
    return b"".join(r.to_bytes(2, "big") for r in registers)


def to_canonical_bytes(registers: Sequence[int], order: ByteOrder) -> bytes:
    """The value's bytes most significant first, from registers as they came off the wire."""
    raw = _wire_bytes(registers)
    if order is ByteOrder.ABCD:
        return raw
    if order is ByteOrder.DCBA:
        return raw[::-1]
    words = [raw[i : i + 2] for i in range(0, len(raw), 2)]
    if order is ByteOrder.CDAB:
        return b"".join(reversed(words))
    return b"".join(w[::-1] for w in words)  # BADC


def _from_canonical(data: bytes, order: ByteOrder) -> list[int]:
    # Every order is its own inverse, so encoding applies the same permutation.
    registers = [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]
    wire = to_canonical_bytes(registers, order)
    return [int.from_bytes(wire[i : i + 2], "big") for i in range(0, len(wire), 2)]


def _bcd(data: bytes) -> int:
    value = 0
    for byte in data:
        for digit in (byte >> 4, byte & 0x0F):
            if digit > 9:
                raise DecodeError(f"0x{data.hex().upper()} is not BCD: digit {digit:X}")
            value = value * 10 + digit
    return value


def decode(
    registers: Sequence[int],
    dtype: DataType,
    order: ByteOrder = ByteOrder.ABCD,
    bit: int | None = None,
) -> int | float | bool:
    """The value held by `registers` (16-bit words as read) for one data type and order.

    BOOL takes one coil or discrete input as a one-element list of 0/1; BIT takes one
    register and the bit number (0 = least significant).  Floats may come back NaN or
    infinite: meters use those for "not available", and the caller decides.
    """
    if dtype is DataType.BOOL:
        if len(registers) != 1:
            raise DecodeError(f"bool takes one bit, got {len(registers)} values")
        return bool(registers[0])
    if len(registers) != dtype.registers:
        raise DecodeError(f"{dtype} takes {dtype.registers} registers, got {len(registers)}")
    if dtype is DataType.BIT:
        if bit is None or not 0 <= bit <= 15:
            raise DecodeError("bit needs a bit number 0-15")
        word = int.from_bytes(to_canonical_bytes(registers, order), "big")
        return bool((word >> bit) & 1)
    data = to_canonical_bytes(registers, order)
    if dtype in (DataType.BCD16, DataType.BCD32):
        return _bcd(data)
    value: int | float = struct.unpack(_STRUCT[dtype], data)[0]
    return value


Decoder = Callable[[Sequence[int]], int | float | bool]


@functools.cache
def decoder(dtype: DataType, order: ByteOrder = ByteOrder.ABCD, bit: int | None = None) -> Decoder:
    """`decode` for one data type and order, made once: what a poll runs for every point.

    The general `decode` builds the canonical bytes word by word; it cost about 270 µs
    per poll of a 30-value meter, a quarter of the gateway's CPU at a 1 s poll
    (docs/benchmarks.md, issue 16).  A number here is one `struct` pack of the words in
    the order's sequence and byte order, then one unpack: the words reversed for CDAB
    and DCBA, each word little-endian for BADC and DCBA (the same permutation as
    `to_canonical_bytes`).  Same values and the same DecodeError as `decode`.
    """
    fmt = _STRUCT.get(dtype)
    if fmt is None:  # BCD, bits and coils: rare, and the general code says what is wrong
        return functools.partial(_general, dtype=dtype, order=order, bit=bit)
    n = dtype.registers
    endian = "<" if order in (ByteOrder.BADC, ByteOrder.DCBA) else ">"
    pack = struct.Struct(endian + "H" * n).pack
    unpack = struct.Struct(fmt).unpack
    backwards = order in (ByteOrder.CDAB, ByteOrder.DCBA)

    def number(registers: Sequence[int]) -> int | float:
        if len(registers) != n:
            raise DecodeError(f"{dtype} takes {n} registers, got {len(registers)}")
        try:
            data = pack(*reversed(registers)) if backwards else pack(*registers)
        except struct.error:
            _wire_bytes(registers)  # names the word that is not a 16-bit word
            raise
        value: int | float = unpack(data)[0]
        return value

    return number


def _general(
    registers: Sequence[int], *, dtype: DataType, order: ByteOrder, bit: int | None
) -> int | float | bool:
    return decode(registers, dtype, order, bit)


def encode(value: float | bool, dtype: DataType, order: ByteOrder = ByteOrder.ABCD) -> list[int]:
    """The registers a device sends for `value`: the inverse of `decode` (test peers use it).

    BOOL gives one 0/1 value; BIT gives the register with only that bit set (bit 0).
    """
    if dtype is DataType.BOOL:
        return [1 if value else 0]
    if dtype is DataType.BIT:
        return [1 if value else 0]
    if dtype in (DataType.BCD16, DataType.BCD32):
        digits = 4 * dtype.registers
        number = int(value)
        if not 0 <= number < 10**digits:
            raise DecodeError(f"{number} does not fit in {digits} BCD digits")
        data = bytes.fromhex(f"{number:0{digits}d}")
    else:
        fmt = _STRUCT[dtype]
        try:
            data = struct.pack(fmt, value if dtype.is_float else int(value))
        except struct.error as exc:
            raise DecodeError(f"{value} does not fit in {dtype}: {exc}") from None
    return _from_canonical(data, order)
