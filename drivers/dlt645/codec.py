"""DL/T 645-2007 frames: build requests, find and parse replies, decode BCD.

Pure functions over bytes; no I/O.  A frame on the wire is::

    FE FE FE FE   68  A0 A1 A2 A3 A4 A5  68  C  L  DATA(L bytes, each +0x33)  CS  16
    (optional     (address, least        |   |     |                          |
     wake-up      significant byte       |   |     |                          sum of all bytes
     preamble)    first)                 |   |     from the first 68 to the end of DATA, mod 256
                                         control code, data length

Addresses are handled as 12 hexadecimal digits in *label order* (the order printed on
the meter): the label "000012345678" is sent as 78 56 34 12 00 00.  Data fields are
handled here with the 0x33 offset already removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, IntFlag

__all__ = [
    "BROADCAST_ADDRESS",
    "MAX_DATA",
    "PREAMBLE",
    "ErrorFlags",
    "Frame",
    "Function",
    "IncompleteFrame",
    "ParseError",
    "ScanResult",
    "bcd_decode",
    "bcd_encode",
    "build_read",
    "build_read_address",
    "encode_frame",
    "parse_frame",
    "scaled",
    "scan",
]

START = 0x68
END = 0x16
OFFSET = 0x33
PREAMBLE = b"\xfe\xfe\xfe\xfe"
BROADCAST_ADDRESS = "aaaaaaaaaaaa"
MAX_DATA = 255  # L is one byte; the standard keeps reads to 200, the parser need not care
_HEADER = 10  # 68 + 6 address bytes + 68 + C + L
_OVERHEAD = _HEADER + 2  # + CS + 16

_DIRECTION_REPLY = 0x80
_ABNORMAL = 0x40
_FOLLOW_UP = 0x20
_FUNCTION_MASK = 0x1F


class ParseError(ValueError):
    """Bytes that are not a valid DL/T 645 frame, or a value that is not valid BCD.

    The only exception the parsing functions of this module raise.
    """


class IncompleteFrame(ParseError):
    """The bytes are the beginning of a frame: more may complete it."""


class Function(IntEnum):
    """The function bits (D4..D0) of the control code that this driver uses."""

    READ_DATA = 0x11
    READ_FOLLOW_UP = 0x12
    READ_ADDRESS = 0x13


class ErrorFlags(IntFlag):
    """The error byte of an abnormal reply (control code with D6 set)."""

    OTHER = 0x01
    NO_DATA = 0x02  # the meter has no such data identifier
    UNAUTHORISED = 0x04  # wrong password or not authorised
    BAUD_FIXED = 0x08
    YEAR_ZONES = 0x10
    DAY_PERIODS = 0x20
    TARIFFS = 0x40

    def describe(self) -> str:
        """Words an installer understands, e.g. 'no requested data'."""
        words = {
            ErrorFlags.OTHER: "other error",
            ErrorFlags.NO_DATA: "no requested data (the meter does not have this value)",
            ErrorFlags.UNAUTHORISED: "password wrong or not authorised",
            ErrorFlags.BAUD_FIXED: "baud rate cannot be changed",
            ErrorFlags.YEAR_ZONES: "too many year time zones",
            ErrorFlags.DAY_PERIODS: "too many day periods",
            ErrorFlags.TARIFFS: "too many tariffs",
        }
        found = [text for flag, text in words.items() if flag in self]
        return "; ".join(found) or f"error byte {int(self):#04x}"


def _check_address(address: str) -> bytes:
    if len(address) != 12:
        raise ValueError(f"address {address!r} must be 12 hexadecimal digits")
    try:
        label = bytes.fromhex(address)
    except ValueError:
        raise ValueError(f"address {address!r} must be 12 hexadecimal digits") from None
    return label[::-1]


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame: address in label order, control code, data without the 0x33 offset."""

    address: str
    control: int
    data: bytes = b""

    def __post_init__(self) -> None:
        _check_address(self.address)
        if self.address != self.address.lower():
            raise ValueError(f"address {self.address!r} must be written in lower case")
        if not 0 <= self.control <= 0xFF:
            raise ValueError(f"control code {self.control} is not one byte")
        if len(self.data) > MAX_DATA:
            raise ValueError(
                f"data of {len(self.data)} bytes does not fit a frame (max {MAX_DATA})"
            )

    @property
    def function(self) -> int:
        return self.control & _FUNCTION_MASK

    @property
    def is_reply(self) -> bool:
        return bool(self.control & _DIRECTION_REPLY)

    @property
    def is_abnormal(self) -> bool:
        return bool(self.control & _ABNORMAL)

    @property
    def has_follow_up(self) -> bool:
        return bool(self.control & _FOLLOW_UP)

    def error(self) -> ErrorFlags | None:
        """The error flags of an abnormal reply, None for a normal one."""
        if not self.is_abnormal:
            return None
        return ErrorFlags(self.data[0] if self.data else 0)


def _checksum(body: bytes | bytearray) -> int:
    return sum(body) & 0xFF


def encode_frame(frame: Frame, *, preamble: bool = True) -> bytes:
    """The bytes of a frame, with the FE wake-up preamble unless told otherwise."""
    body = bytearray([START])
    body += _check_address(frame.address)
    body += bytes([START, frame.control, len(frame.data)])
    body += bytes((b + OFFSET) & 0xFF for b in frame.data)
    body += bytes([_checksum(body), END])
    return (PREAMBLE if preamble else b"") + bytes(body)


def build_read(address: str, di: int) -> bytes:
    """A read-data request (control 0x11) for one data identifier."""
    if not 0 <= di <= 0xFFFFFFFF:
        raise ValueError(f"data identifier {di:#x} is not four bytes")
    return encode_frame(Frame(address, Function.READ_DATA, di.to_bytes(4, "little")))


def build_read_address() -> bytes:
    """The broadcast read-address request (control 0x13): only one meter may be on the bus."""
    return encode_frame(Frame(BROADCAST_ADDRESS, Function.READ_ADDRESS))


def _frame_at(buf: bytes | bytearray, i: int) -> Frame:
    """Parse the frame whose first 0x68 is at `i`; raises ParseError or IncompleteFrame."""
    avail = len(buf) - i
    if avail >= 8 and buf[i + 7] != START:
        raise ParseError(f"no second 0x68 at offset {i + 7}")
    if avail < _HEADER:
        raise IncompleteFrame(f"{avail} bytes of a frame header ({_HEADER} needed)")
    length = buf[i + 9]
    total = _OVERHEAD + length
    if avail < total:
        raise IncompleteFrame(f"{avail} of {total} bytes of a frame")
    body = buf[i : i + _HEADER + length]
    cs, end = buf[i + _HEADER + length], buf[i + _HEADER + length + 1]
    if cs != _checksum(body):
        raise ParseError(f"checksum {cs:#04x}, computed {_checksum(body):#04x}")
    if end != END:
        raise ParseError(f"frame ends with {end:#04x} instead of 0x16")
    address = bytes(buf[i + 1 : i + 7])[::-1].hex()
    data = bytes((b - OFFSET) & 0xFF for b in body[_HEADER:])
    return Frame(address, buf[i + 8], data)


def parse_frame(raw: bytes) -> Frame:
    """Parse exactly one frame, optionally after FE preamble bytes.

    Raises IncompleteFrame when `raw` is a frame cut short, ParseError for anything
    else that is wrong (garbage, bad checksum, bytes after the end).
    """
    i = 0
    while i < len(raw) and raw[i] == 0xFE:
        i += 1
    if i == len(raw):
        raise IncompleteFrame("no frame yet (only preamble)" if raw else "no bytes")
    if raw[i] != START:
        raise ParseError(f"frame starts with {raw[i]:#04x} instead of 0x68")
    frame = _frame_at(raw, i)
    used = i + _OVERHEAD + len(frame.data)
    if used != len(raw):
        raise ParseError(f"{len(raw) - used} bytes after the end of the frame")
    return frame


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What `scan` found: a frame or None, and how many bytes of the buffer to drop."""

    frame: Frame | None
    consumed: int
    skipped: int  # bytes dropped that were not part of a frame or its preamble: garbage


def scan(buf: bytes | bytearray) -> ScanResult:
    """Find the first valid frame in a receive buffer, skipping garbage and noise.

    Never raises.  A 0x68 inside garbage can look like a frame start, so a candidate
    that is incomplete does not stop the search: a complete valid frame after it wins.
    Without one, everything before the earliest incomplete candidate is dropped and
    the caller waits for more bytes.
    """
    waiting_at: int | None = None
    i = buf.find(START)
    while i != -1:
        try:
            frame = _frame_at(buf, i)
        except IncompleteFrame:
            if waiting_at is None:
                waiting_at = i
        except ParseError:
            pass
        else:
            end = i + _OVERHEAD + len(frame.data)
            return ScanResult(frame, end, i - _preamble_before(buf, i))
        i = buf.find(START, i + 1)
    drop = len(buf) if waiting_at is None else waiting_at
    # FE bytes are a wake-up preamble, not noise: a reply cut by the timeout is no garbage.
    return ScanResult(None, drop, drop - _preamble_before(buf, drop))


def _preamble_before(buf: bytes | bytearray, i: int) -> int:
    n = 0
    while i - n - 1 >= 0 and buf[i - n - 1] == 0xFE:
        n += 1
    return n


def bcd_encode(value: int, size: int) -> bytes:
    """`value` as `size` BCD bytes, least significant byte first (the wire order)."""
    if value < 0 or value >= 10 ** (2 * size):
        raise ValueError(f"{value} does not fit {size} BCD bytes")
    digits = f"{value:0{2 * size}d}"
    return bytes.fromhex(digits)[::-1]


def bcd_decode(raw: bytes, *, signed: bool = False) -> int:
    """Decode BCD bytes, least significant first; with `signed`, bit 7 of the last is the sign.

    Raises ParseError for a nibble above 9 (meters send FF FF for a missing value).
    """
    if not raw:
        raise ParseError("no BCD bytes")
    msb_first = bytearray(raw[::-1])
    negative = False
    if signed:
        negative = bool(msb_first[0] & 0x80)
        msb_first[0] &= 0x7F
    digits = msb_first.hex()
    if not digits.isdigit():
        raise ParseError(f"not BCD: {bytes(raw).hex(' ')}")
    value = int(digits)
    return -value if negative else value


def scaled(raw: int, decimals: int) -> Decimal:
    """An integer count of the last digit as an exact decimal number."""
    return Decimal(raw).scaleb(-decimals)
