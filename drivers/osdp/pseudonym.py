"""Card and PIN pseudonyms: a keyed HMAC, so raw numbers never leave the gateway.

`HMAC-SHA256(site_secret, domain + bit length + card bytes)` truncated to 15 bytes and
written in base32: stable across restarts and across the gateways of one site (they
share the secret), different on another site, and useless without the secret.  The
bits past the card's length in its last byte are cleared first, so a reader padding
them with ones or zeros gives the same pseudonym.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

__all__ = [
    "CARD_PREFIX",
    "PIN_PREFIX",
    "PSEUDONYM_RE",
    "PseudonymError",
    "card_bytes",
    "card_pseudonym",
    "pin_pseudonym",
]

CARD_PREFIX = "c-"
PIN_PREFIX = "p-"
_TOKEN_BYTES = 15  # 120 bits: base32 without padding, 24 characters
PSEUDONYM_RE = re.compile(r"^[cp]-[A-Z2-7]{24}$")
_MIN_SECRET = 16
_MAX_BITS = 1024  # far above any OSDP card read; keeps the length in two bytes


class PseudonymError(ValueError):
    """A secret too short, or card data that does not hold the bits it claims."""


def _key(secret: bytes) -> bytes:
    if len(secret) < _MIN_SECRET:
        raise PseudonymError(
            f"the site secret has {len(secret)} bytes; use at least {_MIN_SECRET} random bytes "
            "(e.g. `head -c 32 /dev/urandom | base64`)"
        )
    return secret


def _token(prefix: str, secret: bytes, message: bytes) -> str:
    digest = hmac.new(_key(secret), message, hashlib.sha256).digest()[:_TOKEN_BYTES]
    return prefix + base64.b32encode(digest).decode("ascii")


def card_bytes(data: bytes, bits: int) -> bytes:
    """The card's bytes cut to `bits` (MSB first), the unused trailing bits cleared."""
    if not 0 < bits <= _MAX_BITS:
        raise PseudonymError(f"a card has 1 to {_MAX_BITS} bits, not {bits}")
    size = (bits + 7) // 8
    if len(data) < size:
        raise PseudonymError(f"{bits} bits need {size} bytes, the reader sent {len(data)}")
    out = bytearray(data[:size])
    spare = size * 8 - bits
    if spare:
        out[-1] &= (0xFF << spare) & 0xFF
    return bytes(out)


def card_pseudonym(secret: bytes, data: bytes, bits: int) -> str:
    """The site-wide pseudonym of a card: `c-` and 24 base32 characters."""
    body = card_bytes(data, bits)  # checks `bits` first
    message = b"card\x00" + bits.to_bytes(2, "big") + body
    return _token(CARD_PREFIX, secret, message)


def pin_pseudonym(secret: bytes, digits: str) -> str:
    """The pseudonym of a keypad entry: `p-` and 24 base32 characters.

    A short PIN has few values, so anyone holding the site secret can find it by trying
    them all; without the secret the token tells nothing.
    """
    return _token(PIN_PREFIX, secret, b"pin\x00" + digits.encode("ascii", "replace"))
