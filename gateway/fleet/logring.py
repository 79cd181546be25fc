"""The last log lines in memory, redacted as they arrive, for `cmd/diag/logs`.

A gateway's journal is on the box; an operator 300 km away needs the last lines of it
without a site visit, and without the lines carrying residents' data off the gateway.
`LogRing` is a logging handler installed at start that keeps the newest lines within
a bound on lines and on bytes; every line is redacted before it is stored, so the
unredacted text never sits in the ring.  What is redacted (`redact`):

- secrets: PEM blocks, the password in a URL (`mqtts://user:PASS@host`), the value
  after a key named like a secret (`password=`, `token: `, `'pin': '1234'`,
  `scbk=`, `Authorization: Bearer …`) and any run of 32 or more hex or base64 characters;
- card numbers and PINs: the value after a word naming a card, PIN or key pad
  (`access.card_read 3f9a0c…`, `card=…`), quoted digit strings (`'123456'`, a PIN typed
  as a staff id) and runs of 8 or more digits;
- phone numbers: `+` and 7 to 15 digits (spaces and dashes allowed), and national
  numbers in groups (`0171 234 5678`).

Times (`2026-12-06 20:05:11`), IP addresses and ordinary ids stay readable: a log
that hides everything helps nobody diagnose anything.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from datetime import UTC, datetime

from community_protocol.enums import LogLevel

__all__ = ["LEVELS", "LogRing", "redact"]

LEVELS = tuple(str(level) for level in LogLevel)
HIDDEN = "[redacted]"

_SECRET_WORD = (
    r"pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|private[_-]?key|scbk|psk|sig|"
    r"pin|card(?:_?(?:raw|number|no|id))?|raw_card|phone|msisdn|mobile|tel"
)
_SECRET_HINTS: tuple[str, ...] = ("pass", "pwd", "secret", "token", "key", "scbk", "psk")
_SECRET_HINTS += ("sig", "pin", "card", "phone", "msisdn", "mobile", "tel")
_DIGITS = tuple("0123456789")
_ALWAYS: tuple[str, ...] = ()

# (pattern, replacement, hints): a rule runs only on a line that holds one of its hints
# (lower case), which keeps a quiet line's cost to a few substring tests.
_RULES: tuple[tuple[re.Pattern[str], str, tuple[str, ...]], ...] = (
    # Key files pasted into a message.
    (
        re.compile(r"-----BEGIN [A-Z ]+-----.*?(?:-----END [A-Z ]+-----|$)", re.S),
        HIDDEN,
        ("-----begin",),
    ),
    # A URL's user:password@.
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]*://[^\s/:@]+:)[^\s/@]+@", re.I),
        rf"\1{HIDDEN}@",
        ("://",),
    ),
    # Authorization headers.
    (
        re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+", re.I),
        rf"\1 {HIDDEN}",
        ("bearer", "basic"),
    ),
    # key=value, key: value, 'key': 'value', "key": "value".
    (
        re.compile(
            rf"""(\b(?:{_SECRET_WORD})\b["']?\s*[:=]\s*)(?:"[^"]*"|'[^']*'|[^\s"',;&)}}\]]+)""",
            re.I,
        ),
        rf"\1{HIDDEN}",
        _SECRET_HINTS,
    ),
    # The value right after a word naming a card, PIN or key pad: `access.card_read 3f9a…`.
    (
        re.compile(
            r"(\b[\w.]*(?:card|pin|keypad|keys)[\w.]*(?:\s+[A-Za-z]+){0,2}\s+)"
            r"(?:[0-9A-Fa-f]{4,}|\d[\d#*]{3,}|[\d*]+#)(?![\w])",
            re.I,
        ),
        rf"\1{HIDDEN}",
        ("card", "pin", "key"),
    ),
    # Card data as the OSDP driver logs it: `access.denied 1234567 (26 bits)`.
    (re.compile(r"(?<=\s)\S+(?= \(\d+ bits\))"), HIDDEN, (" bits)",)),
    # Long hex or base64 runs: keys, signatures, raw card data.
    (re.compile(r"(?<![\w/+=-])[A-Za-z0-9+/_-]{32,}={0,2}(?![\w/+=-])"), HIDDEN, _ALWAYS),
    # International phone numbers.
    (re.compile(r"(?<![\w+])\+\d(?:[ -]?\d){6,14}\b"), HIDDEN, ("+",)),
    # National phone numbers in groups: 0171 234 5678, 030-1234-5678.
    (re.compile(r"(?<![\w.:/-])0\d{1,4}(?:[ -]\d{2,4}){2,3}(?![\w.:-])"), HIDDEN, _DIGITS),
    # Quoted digit strings (a PIN typed into a staff id field) and long digit runs.
    (re.compile(r"""(["'])\d{4,}\1"""), rf"\1{HIDDEN}\1", _DIGITS),
    (re.compile(r"(?<![\w.:-])\d{8,}(?![\w.:-])"), HIDDEN, _DIGITS),
)


def redact(text: str) -> str:
    """`text` with secrets, card numbers, PINs and phone numbers replaced by [redacted]."""
    low = text.lower()
    for pattern, replacement, hints in _RULES:
        if not hints or any(h in low for h in hints):
            text = pattern.sub(replacement, text)
    return text


class LogRing(logging.Handler):
    """Keeps the newest redacted log lines: at most `max_lines` and `max_bytes` in total.

    A line longer than `max_line` characters is cut (a traceback keeps its last frames,
    where the error is).  Thread-safe: any thread logs, the event loop reads.
    """

    def __init__(
        self, max_lines: int = 2_000, max_bytes: int = 512 * 1024, max_line: int = 2_000
    ) -> None:
        super().__init__(logging.DEBUG)
        self.max_lines, self.max_bytes, self.max_line = max_lines, max_bytes, max_line
        self._lines: deque[tuple[int, str]] = deque()
        self._bytes = 0
        self._ring_lock = threading.Lock()
        self.dropped = 0  # lines pushed out by the bounds since start

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
        except Exception:  # a bad format string must not cost the log line, nor raise
            text = f"{record.msg!r} (unformattable arguments)"
        # Redacted before it is cut, so a cut never leaves half a secret too short to
        # be recognised; the rough cut first bounds the regexes' work.
        if len(text) > 10 * self.max_line:
            text = text[: 5 * self.max_line] + text[-5 * self.max_line :]
        text = redact(text)
        if len(text) > self.max_line:
            half = self.max_line // 2
            text = f"{text[:half]} … {text[-half:]}"
        ts = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line = f"{ts[:-6]}Z {record.levelname.lower()} {record.name}: {text}"
        size = len(line.encode())
        with self._ring_lock:
            self._lines.append((record.levelno, line))
            self._bytes += size
            while self._lines and (
                len(self._lines) > self.max_lines or self._bytes > self.max_bytes
            ):
                _, old = self._lines.popleft()
                self._bytes -= len(old.encode())
                self.dropped += 1

    def last(self, n: int, *, level: str = "debug", max_bytes: int | None = None) -> list[str]:
        """The newest `n` lines at `level` or above, oldest first, within `max_bytes`."""
        floor = logging.getLevelName(level.upper())
        budget = self.max_bytes if max_bytes is None else max_bytes
        out: list[str] = []
        with self._ring_lock:
            for levelno, line in reversed(self._lines):
                if len(out) >= n:
                    break
                if levelno < floor:
                    continue
                budget -= len(line.encode())
                if budget < 0:
                    break
                out.append(line)
        out.reverse()
        return out

    def __len__(self) -> int:
        return len(self._lines)

    @property
    def size_bytes(self) -> int:
        return self._bytes
