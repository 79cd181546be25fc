"""Keypad digits from a reader, buffered into one entry per `#` (or a pause).

OSDP sends keys as they are pressed, one or a few per reply: ASCII digits, `*` as 0x7F
and `#` as 0x0D (some readers send the ASCII `*` and `#`).  `#` ends an entry, `*`
clears what was typed, and a pause longer than the timeout ends it too, so a PIN typed
without `#` is still reported once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Ended", "KeypadBuffer", "KeypadEntry"]

_ENTER = frozenset(b"#\r")
_CLEAR = frozenset(b"*\x7f")


class Ended(StrEnum):
    """Why an entry ended."""

    ENTER = "enter"
    TIMEOUT = "timeout"
    OVERFLOW = "overflow"


@dataclass(frozen=True, slots=True)
class KeypadEntry:
    """The digits of one entry; personal data, never published as is."""

    digits: str
    ended: Ended


@dataclass(slots=True)
class KeypadBuffer:
    """Collects keys until `#`, a timeout or `max_digits`; ignores anything but digits."""

    timeout_s: float = 5.0
    max_digits: int = 12
    _digits: list[str] = field(default_factory=list)
    _last: float = 0.0
    ignored: int = 0  # keys that are neither digit, `#` nor `*`

    @property
    def due(self) -> float | None:
        """When the pending entry times out (same clock as `feed`), or None if empty."""
        return self._last + self.timeout_s if self._digits else None

    def feed(self, keys: bytes, now: float) -> list[KeypadEntry]:
        """Add keys pressed at `now`; returns the entries they completed."""
        out = self.expire(now)
        for key in keys:
            if key in _ENTER:
                if self._digits:
                    out.append(KeypadEntry("".join(self._digits), Ended.ENTER))
                self._digits.clear()
            elif key in _CLEAR:
                self._digits.clear()
            elif 0x30 <= key <= 0x39:
                self._digits.append(chr(key))
                if len(self._digits) >= self.max_digits:
                    out.append(KeypadEntry("".join(self._digits), Ended.OVERFLOW))
                    self._digits.clear()
            else:
                self.ignored += 1
        self._last = now
        return out

    def expire(self, now: float) -> list[KeypadEntry]:
        """The pending entry if its timeout has passed at `now`."""
        due = self.due
        if due is None or now < due:
            return []
        entry = KeypadEntry("".join(self._digits), Ended.TIMEOUT)
        self._digits.clear()
        return [entry]
