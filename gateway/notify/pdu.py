"""SMS-SUBMIT PDUs for a modem in PDU mode (3GPP TS 23.040 and 23.038, AT+CMGF=0).

Pure code: text and a phone number in, hex strings out.  Text in the GSM 7-bit default
alphabet (with its extension table) is packed into septets, 160 to a message; anything
else (Chinese above all) goes as UCS-2, 70 characters to a message.  A longer text is
split into concatenated parts with an 8-bit reference (UDH IEI 0x00), never between an
escape and its character, and capped at `max_parts` so that one alarm cannot run up an
unbounded bill.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Part", "encode_number", "encode_submit", "gsm7_septets", "is_gsm7"]

# The default alphabet, by septet value (TS 23.038 6.2.1); 0x1B is the escape.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_EXT = {"\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D}
_EXT |= {"]": 0x3E, "|": 0x40, "€": 0x65}
_BASIC_INDEX = {ch: i for i, ch in enumerate(_BASIC) if ch != "\x1b"}
assert len(_BASIC) == 128

_NUMBER = re.compile(r"^\+?[0-9]{3,20}$")
_SINGLE = {"gsm7": 160, "ucs2": 70}  # units in one unsplit message
_PART = {"gsm7": 153, "ucs2": 67}  # units in one part after the 6-octet header
# First octet: SMS-SUBMIT, relative validity period present; bit 6 says a header follows.
_SUBMIT_VP_RELATIVE = 0x11
_UDHI = 0x40
_VALIDITY_24H = 0xA7  # (167 - 143) * 30 min + 12 h


@dataclass(frozen=True, slots=True)
class Part:
    """One PDU to send: `AT+CMGS=<tpdu_octets>`, then `hex` and Ctrl-Z."""

    hex: str
    tpdu_octets: int


def is_gsm7(text: str) -> bool:
    """True when every character has a GSM 7-bit encoding (basic or extension table)."""
    return all(ch in _BASIC_INDEX or ch in _EXT for ch in text)


def gsm7_septets(text: str) -> list[int]:
    """Septet values of `text`; an extension character is an escape and its code."""
    out: list[int] = []
    for ch in text:
        if ch in _BASIC_INDEX:
            out.append(_BASIC_INDEX[ch])
        else:
            out.extend((0x1B, _EXT[ch]))
    return out


def _pack(septets: list[int], fill_bits: int) -> bytes:
    """Septets packed LSB first after `fill_bits` zero bits (the header's padding)."""
    acc, nbits, out = 0, fill_bits, bytearray()
    for s in septets:
        acc |= s << nbits
        nbits += 7
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def encode_number(number: str) -> bytes:
    """TP-DA: digit count, type of address, swapped semi-octets padded with F."""
    if not _NUMBER.match(number):
        raise ValueError(f"{number!r} is not a phone number (digits, optionally after +)")
    international = number.startswith("+")
    digits = number.lstrip("+")
    padded = digits + ("F" if len(digits) % 2 else "")
    swapped = "".join(padded[i + 1] + padded[i] for i in range(0, len(padded), 2))
    return bytes([len(digits), 0x91 if international else 0x81]) + bytes.fromhex(swapped)


def _units(text: str, coding: str) -> list[tuple[int, ...]]:
    """One entry a character: its septets (GSM 7-bit) or its UTF-16 code unit (UCS-2)."""
    if coding == "gsm7":
        return [tuple(gsm7_septets(ch)) for ch in text]
    # UCS-2 has no surrogate pairs: a character beyond the BMP (an emoji) becomes U+FFFD.
    return [(ord(ch) if ord(ch) <= 0xFFFF else 0xFFFD,) for ch in text]


def _width(units: list[tuple[int, ...]]) -> int:
    return sum(len(u) for u in units)


def _truncate(units: list[tuple[int, ...]], limit: int, ellipsis: tuple[int, ...]) -> list:
    """The units that fit in `limit`, ending with `ellipsis` when something was cut."""
    if _width(units) <= limit:
        return units
    out: list[tuple[int, ...]] = []
    for unit in units:
        if _width(out) + len(unit) > limit - len(ellipsis):
            break
        out.append(unit)
    return [*out, ellipsis]


def _split(units: list[tuple[int, ...]], size: int) -> list[list[tuple[int, ...]]]:
    """Consecutive chunks of at most `size` width; a character is never cut in two."""
    chunks: list[list[tuple[int, ...]]] = [[]]
    for unit in units:
        if _width(chunks[-1]) + len(unit) > size:
            chunks.append([])
        chunks[-1].append(unit)
    return chunks


def _user_data(chunk: list[tuple[int, ...]], coding: str, header: bytes) -> tuple[int, bytes]:
    """TP-UDL and TP-UD of one part."""
    values = [v for unit in chunk for v in unit]
    if coding == "ucs2":
        body = header + b"".join(v.to_bytes(2, "big") for v in values)
        return len(body), body
    # Septets start on a septet boundary after the header: pad with fill bits.
    fill = (7 - len(header) * 8 % 7) % 7
    return (len(header) * 8 + fill) // 7 + len(values), header + _pack(values, fill)


def encode_submit(number: str, text: str, *, reference: int = 0, max_parts: int = 4) -> list[Part]:
    """The PDUs that send `text` to `number`, one per part; the SMSC is the SIM's own.

    `reference` (0-255) ties the parts of one concatenated message together; give each
    message a different one.
    """
    if not 1 <= max_parts <= 255:
        raise ValueError("max_parts must be 1 to 255")
    address = encode_number(number)
    coding = "gsm7" if is_gsm7(text) else "ucs2"
    units = _units(text, coding)
    if _width(units) <= _SINGLE[coding]:
        chunks = [units]
    else:
        ellipsis = (0x2E, 0x2E, 0x2E) if coding == "gsm7" else (0x2026,)
        chunks = _split(_truncate(units, _PART[coding] * max_parts, ellipsis), _PART[coding])
    dcs = 0x00 if coding == "gsm7" else 0x08
    parts: list[Part] = []
    for index, chunk in enumerate(chunks, start=1):
        header = b""
        if len(chunks) > 1:
            header = bytes([0x05, 0x00, 0x03, reference & 0xFF, len(chunks), index])
        udl, body = _user_data(chunk, coding, header)
        first = _SUBMIT_VP_RELATIVE | (_UDHI if header else 0)
        tpdu = bytes([first, 0x00]) + address + bytes([0x00, dcs, _VALIDITY_24H, udl]) + body
        parts.append(Part(hex=("00" + tpdu.hex()).upper(), tpdu_octets=len(tpdu)))
    return parts
