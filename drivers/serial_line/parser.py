"""Pure protocol code: bytes into lines, lines into (code, event), repeats into one press.

Receivers end lines with CR, LF or CRLF; each of them ends a line.  A radio receiver's
UART also picks up noise (`\\x00\\xff` before a line after a power glitch, two lines run
together when a terminator was lost); `Parser.scan` finds the signals again at the
profile's `line_start` and reports the bytes it skipped, so noise costs no press.

Nothing here does I/O or reads a clock; the driver feeds bytes and times in.  No input
makes these raise: a line that cannot be understood becomes a `Problem`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from drivers.serial_line.profile import Profile
from gateway.sdk.model import EventType

__all__ = [
    "MAX_LINE",
    "Deduper",
    "LineSplitter",
    "Parser",
    "Problem",
    "ProblemKind",
    "Signal",
]

# Receivers print lines of a few dozen bytes; 4 KiB without a newline is a wrong baud
# rate or a device that is not a receiver.  Bounded so noise cannot fill memory.
MAX_LINE = 4096
_SHOWN = 60  # characters of a bad line quoted in logs


class ProblemKind(StrEnum):
    """Why a line gave no event; each kind is logged once and counted in health."""

    GARBAGE = "garbage"  # no rule matches: noise, wrong profile or wrong baud
    TOO_LONG = "too_long"  # no newline within MAX_LINE bytes
    BAD_ENCODING = "bad_encoding"  # not UTF-8: usually a wrong baud rate
    UNKNOWN_FUNCTION = "unknown_function"  # a rule matched, its `fn` is not in the table
    SKIPPED = "skipped"  # noise around a signal found again at the line's start pattern


@dataclass(frozen=True, slots=True)
class Problem:
    kind: ProblemKind
    detail: str
    skipped: int = 0  # bytes of noise dropped (SKIPPED)


@dataclass(frozen=True, slots=True)
class Signal:
    """One decoded transmission: who sent it and what it means."""

    code: str
    event: EventType
    function: str
    line: str


def _shown(raw: bytes | str) -> str:
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "backslashreplace")
    return repr(text[:_SHOWN] + ("…" if len(text) > _SHOWN else ""))


_ENDS = re.compile(rb"[\r\n]")
# Around a line: whitespace and control bytes (a NUL a UART reads on a glitch).
_BLANK = bytes(range(0x21)) + b"\x7f"


@dataclass(slots=True)
class LineSplitter:
    """Cuts a byte stream at CR, LF or CRLF; a line longer than `max_line` is one Problem.

    Empty lines (the LF of a CRLF, blank lines) are dropped here.
    """

    max_line: int = MAX_LINE
    _buf: bytearray = field(default_factory=bytearray)
    _discarding: bool = False  # inside an over-long line: drop up to the next newline

    def feed(self, data: bytes) -> list[bytes | Problem]:
        out: list[bytes | Problem] = []
        self._buf += data
        while True:
            found = _ENDS.search(self._buf)
            end = -1 if found is None else found.start()
            if end < 0:
                if len(self._buf) > self.max_line:
                    if not self._discarding:
                        out.append(self._too_long())
                        self._discarding = True
                    self._buf.clear()
                return out
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            if self._discarding:
                self._discarding = False  # the tail of a line already reported
            elif len(line) > self.max_line:
                out.append(self._too_long())
            elif line:
                out.append(line)

    def _too_long(self) -> Problem:
        return Problem(ProblemKind.TOO_LONG, f"no line end within {self.max_line} bytes")

    def reset(self) -> None:
        """Forget a partial line, e.g. after the port was reopened."""
        self._buf.clear()
        self._discarding = False


class Parser:
    """Applies a profile to one line: a Signal, a Problem, or None for ignored chatter."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._rules = [(rule.regex, rule) for rule in profile.rules]
        self._ignore = [re.compile(pattern) for pattern in profile.ignore]
        start = profile.line_start
        self._start = None if start is None else re.compile(start.encode())

    def scan(self, raw: bytes) -> list[Signal | Problem]:
        """Everything one line holds: its signal, or the signals found after noise.

        A line that parses as a whole is taken as is.  Otherwise, if the profile knows
        how a line starts, the line is cut at every such start and each piece parsed:
        `\\x00\\xffRX 1A2B3E FALL` is a FALL after 2 skipped bytes.  What no piece
        explains is one SKIPPED problem with its size; a line without any signal is
        reported as the problem of the whole line.
        """
        whole = self.parse(raw)
        # Chatter the profile ignores (`^#`) may hide a signal after one noise byte too.
        failed: list[Signal | Problem] = [] if whole is None else [whole]
        if isinstance(whole, Signal) or self._start is None:
            return failed
        cuts = [m.start() for m in self._start.finditer(raw)]
        if not cuts or cuts == [0]:
            return failed
        found: list[Signal | Problem] = []
        used = 0
        for a, b in zip(cuts, [*cuts[1:], len(raw)], strict=True):
            piece = self.parse(raw[a:b])
            # An unknown function has a signal's shape: the table lacks it, it is no noise.
            if isinstance(piece, Signal) or (
                isinstance(piece, Problem) and piece.kind is ProblemKind.UNKNOWN_FUNCTION
            ):
                found.append(piece)
                used += len(raw[a:b].strip(_BLANK))
        if not found:
            return failed
        if skipped := len(raw) - used:
            noise = Problem(
                ProblemKind.SKIPPED,
                f"skipped {skipped} bytes of noise in {_shown(raw)}",
                skipped,
            )
            found.insert(0, noise)
        return found

    def parse(self, raw: bytes) -> Signal | Problem | None:
        try:
            line = raw.strip(_BLANK).decode("utf-8")
        except UnicodeDecodeError:
            return Problem(ProblemKind.BAD_ENCODING, f"not UTF-8: {_shown(raw)}")
        if not line:
            return None
        for regex, rule in self._rules:
            found = regex.search(line)
            if found is None:
                continue
            code = found.group("code")
            if rule.event is not None:
                return Signal(code, rule.event, "", line)
            assert rule.functions is not None
            fn = found.group("fn")
            event = rule.functions.get(fn) if fn is not None else None
            if event is None:
                return Problem(ProblemKind.UNKNOWN_FUNCTION, f"function {fn!r} in {_shown(line)}")
            return Signal(code, event, fn, line)
        if any(regex.search(line) for regex in self._ignore):
            return None
        return Problem(ProblemKind.GARBAGE, f"no rule matches {_shown(line)}")


@dataclass(slots=True)
class Deduper:
    """Turns the repeats of one press into one event.

    A transmitter sends each press several times; transmissions of the same code and
    event closer together than `window_s` (measured from the previous repeat, so a held
    button stays one press) are the same press.
    """

    window_s: float
    _last: dict[tuple[str, EventType], float] = field(default_factory=dict)

    def is_new(self, code: str, event: EventType, now: float) -> bool:
        key = (code, event)
        last = self._last.get(key)
        self._last[key] = now
        if len(self._last) > 1024:
            self._forget(now)
        return last is None or now - last >= self.window_s or now < last

    def _forget(self, now: float) -> None:
        for key, t in list(self._last.items()):
            if now - t >= self.window_s:
                del self._last[key]
