"""Wiegand card data: bit strings from a reader to facility code and card number.

Readers report a card as its raw Wiegand bits, MSB first, padded to whole bytes.  The
26-bit (H10301) and 34-bit formats carry an even parity bit over the first half and an
odd parity bit over the second half around the facility code and card number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FORMATS", "WiegandCard", "WiegandError", "decode", "encode", "parse_card_spec"]


_SPEC = re.compile(r"^\s*([0-9]{1,10})\s*:\s*([0-9]{1,10})\s*$")


class WiegandError(ValueError):
    """Card data that is not the Wiegand format asked for (length, parity, range)."""


@dataclass(frozen=True, slots=True)
class _Format:
    bits: int
    facility_bits: int
    number_bits: int


# Device knowledge as data: adding a format is adding a row.
FORMATS: dict[int, _Format] = {
    26: _Format(26, 8, 16),
    34: _Format(34, 16, 16),
}


@dataclass(frozen=True, slots=True)
class WiegandCard:
    """A decoded card: its facility code and number, and whether both parities held."""

    bits: int
    facility: int
    number: int
    parity_ok: bool


def _as_int(data: bytes, bits: int) -> int:
    size = (bits + 7) // 8
    if len(data) < size:
        raise WiegandError(f"{bits} bits need {size} bytes, got {len(data)}")
    return int.from_bytes(data[:size], "big") >> (size * 8 - bits)


def decode(data: bytes, bits: int) -> WiegandCard:
    """Facility code and card number of a 26- or 34-bit card (raises WiegandError)."""
    fmt = FORMATS.get(bits)
    if fmt is None:
        known = ", ".join(str(b) for b in FORMATS)
        raise WiegandError(f"no Wiegand decoding for {bits} bits (known: {known})")
    value = _as_int(data, bits)
    payload_bits = fmt.facility_bits + fmt.number_bits
    payload = (value >> 1) & ((1 << payload_bits) - 1)
    half = payload_bits // 2
    first, second = payload >> half, payload & ((1 << half) - 1)
    even_bit, odd_bit = value >> (bits - 1), value & 1
    parity_ok = (bin(first).count("1") + even_bit) % 2 == 0 and (
        bin(second).count("1") + odd_bit
    ) % 2 == 1
    return WiegandCard(
        bits=bits,
        facility=payload >> fmt.number_bits,
        number=payload & ((1 << fmt.number_bits) - 1),
        parity_ok=parity_ok,
    )


def encode(facility: int, number: int, bits: int = 26) -> bytes:
    """The bytes a reader sends for a card (MSB first, padded with zero bits)."""
    fmt = FORMATS.get(bits)
    if fmt is None:
        raise WiegandError(f"no Wiegand encoding for {bits} bits")
    if not 0 <= facility < (1 << fmt.facility_bits):
        raise WiegandError(f"facility code {facility} does not fit {fmt.facility_bits} bits")
    if not 0 <= number < (1 << fmt.number_bits):
        raise WiegandError(f"card number {number} does not fit {fmt.number_bits} bits")
    payload_bits = fmt.facility_bits + fmt.number_bits
    payload = (facility << fmt.number_bits) | number
    half = payload_bits // 2
    even = bin(payload >> half).count("1") % 2
    odd = 1 - bin(payload & ((1 << half) - 1)).count("1") % 2
    value = (even << (bits - 1)) | (payload << 1) | odd
    size = (bits + 7) // 8
    return (value << (size * 8 - bits)).to_bytes(size, "big")


def parse_card_spec(text: str) -> tuple[int, int]:
    """`FACILITY:NUMBER` as an installer writes it (e.g. `12:34567`)."""
    match = _SPEC.match(text)
    if match is None:
        raise WiegandError(f"{text!r} is not FACILITY:NUMBER (two decimal numbers, e.g. 12:34567)")
    return int(match[1]), int(match[2])
