"""libosdp's event dicts as typed values, and the gateway event data built from them.

libosdp hands the control panel one dict per reply (`{'event': 1, 'reader_no': 0, ...}`).
`parse_event` checks every key it needs and raises `OsdpEventError` naming the key for
anything else, so one odd reply is logged and skipped, never a crash.  The numbers
mirror libosdp 3.x (`osdp.Event`, `osdp.CardFormat`, ...); a test checks they agree.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

from .pseudonym import PseudonymError, card_bytes, card_pseudonym
from .wiegand import FORMATS, WiegandError, decode

__all__ = [
    "CardFormat",
    "CardRead",
    "EventCode",
    "KeyPress",
    "Notification",
    "NotificationType",
    "OsdpEvent",
    "OsdpEventError",
    "StatusReport",
    "StatusType",
    "card_data",
    "parse_event",
]


class EventCode(IntEnum):
    CARD_READ = 1
    KEY_PRESS = 2
    MFG_REPLY = 3
    STATUS = 4
    NOTIFICATION = 5


class CardFormat(IntEnum):
    RAW = 0
    WIEGAND = 1
    ASCII = 2


class StatusType(IntEnum):
    INPUT = 0
    OUTPUT = 1
    LOCAL = 2  # the reader's own tamper and power
    REMOTE = 3


class NotificationType(IntEnum):
    COMMAND = 0  # a command completed: arg0 the command, arg1 non-zero when it succeeded
    SECURE_CHANNEL = 1  # arg0 1 when the secure channel is up, 0 when it failed or ended
    PD_STATUS = 2  # arg0 1 online, 0 offline


class OsdpEventError(ValueError):
    """An event dict that is malformed or of a kind the driver does not handle."""


@dataclass(frozen=True, slots=True)
class CardRead:
    """A card presented to reader `reader_no`: `bits` bits of `data`, MSB first."""

    reader_no: int
    format: CardFormat
    bits: int
    data: bytes


@dataclass(frozen=True, slots=True)
class KeyPress:
    """Keys pressed on reader `reader_no` (ASCII digits, 0x0D for #, 0x7F for *)."""

    reader_no: int
    keys: bytes


@dataclass(frozen=True, slots=True)
class StatusReport:
    """The reader's tamper switch and, if reported, its power."""

    remote: bool
    tamper: bool
    power_fault: bool | None


@dataclass(frozen=True, slots=True)
class Notification:
    """libosdp's own news about a reader: online state, secure channel, command done."""

    type: NotificationType
    arg0: int
    arg1: int


OsdpEvent = CardRead | KeyPress | StatusReport | Notification


def _int(event: Mapping[str, Any], key: str, low: int = 0, high: int = 0xFFFF) -> int:
    value = event.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise OsdpEventError(f"key {key!r} is {type(value).__name__}, not an integer")
    if not low <= value <= high:
        raise OsdpEventError(f"key {key!r} is {value}, outside {low}..{high}")
    return value


def _bytes(event: Mapping[str, Any], key: str) -> bytes:
    value = event.get(key)
    if not isinstance(value, bytes | bytearray):
        raise OsdpEventError(f"key {key!r} is {type(value).__name__}, not bytes")
    return bytes(value)


_E = TypeVar("_E", bound=IntEnum)


def _enum(kind: type[_E], value: int, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise OsdpEventError(f"unknown {what} {value}") from None


def parse_event(event: object) -> OsdpEvent:
    """Type one libosdp event dict; raises OsdpEventError for anything unexpected."""
    if not isinstance(event, Mapping):
        raise OsdpEventError(f"event is {type(event).__name__}, not a dict")
    code = _enum(EventCode, _int(event, "event", 0, 0xFF), "event code")
    if code is EventCode.CARD_READ:
        fmt = _enum(CardFormat, _int(event, "format", 0, 0xFF), "card format")
        data = _bytes(event, "data")
        bits = _int(event, "length", 1, 1024) if fmt is not CardFormat.ASCII else len(data) * 8
        try:
            card_bytes(data, bits)
        except PseudonymError as exc:
            raise OsdpEventError(f"card read: {exc}") from None
        return CardRead(_int(event, "reader_no", 0, 0xFF), fmt, bits, data)
    if code is EventCode.KEY_PRESS:
        return KeyPress(_int(event, "reader_no", 0, 0xFF), _bytes(event, "data"))
    if code is EventCode.STATUS:
        kind = _enum(StatusType, _int(event, "type", 0, 0xFF), "status report type")
        if kind not in (StatusType.LOCAL, StatusType.REMOTE):
            raise OsdpEventError(f"status report of the {kind.name.lower()}s is not used")
        report = _bytes(event, "report")
        if not report:
            raise OsdpEventError("status report with no entries")
        power = bool(report[1]) if len(report) > 1 else None
        return StatusReport(kind is StatusType.REMOTE, bool(report[0]), power)
    if code is EventCode.NOTIFICATION:
        kind_n = _enum(NotificationType, _int(event, "type", 0, 0xFF), "notification type")
        arg0 = _int(event, "arg0", -(2**31), 2**31 - 1)
        arg1 = _int(event, "arg1", -(2**31), 2**31 - 1)
        return Notification(kind_n, arg0, arg1)
    raise OsdpEventError(f"event {code.name.lower()} is not used by this driver")


def card_data(read: CardRead, secret: bytes, *, publish_raw: bool) -> dict[str, Any]:
    """The event data of a card read: its pseudonym, never the number unless asked for."""
    data: dict[str, Any] = {
        "card": card_pseudonym(secret, read.data, read.bits),
        "format": read.format.name.lower(),
        "bits": read.bits,
        "reader_no": read.reader_no,
    }
    if read.format is CardFormat.WIEGAND and read.bits in FORMATS:
        with contextlib.suppress(WiegandError):
            data["parity_ok"] = decode(read.data, read.bits).parity_ok
    if publish_raw:
        data["card_raw"] = card_bytes(read.data, read.bits).hex()
    return data
