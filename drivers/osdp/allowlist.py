"""The allow list of a reader: card pseudonyms, one a line, `#` starts a comment.

The file holds pseudonyms only (made with `gateway osdp pseudonym`), never card numbers.
It is read at start and again whenever its size or modification time changes, checked
on each card read (one `stat`), so an installer's edit applies to the next card.  A bad
line is reported with its number and skipped; a missing or unreadable file denies
every card until it is fixed, and says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .pseudonym import CARD_PREFIX, PSEUDONYM_RE

__all__ = ["AllowList", "parse_allow_list"]


def parse_allow_list(text: str, source: str = "allow list") -> tuple[frozenset[str], list[str]]:
    """The pseudonyms in `text`, and one problem per bad line (`FILE:LINE: why`).

    Lines are split at "\n" only, so line numbers match what an editor shows.
    """
    entries: set[str] = set()
    problems: list[str] = []
    for number, line in enumerate(text.split("\n"), start=1):
        token = line.split("#", 1)[0].strip()
        if not token:
            continue
        if not (PSEUDONYM_RE.match(token) and token.startswith(CARD_PREFIX)):
            shown = token if len(token) <= 40 else token[:40] + "..."
            hint = " (a card number? list pseudonyms from `gateway osdp pseudonym`)"
            problems.append(
                f"{source}:{number}: {shown!r} is not a card pseudonym (c- and 24 of A-Z2-7)"
                + (hint if token.replace(":", "").isdigit() else "")
            )
            continue
        entries.add(token)
    return frozenset(entries), problems


@dataclass(slots=True)
class AllowList:
    """A reader's allow list file, re-read when it changes."""

    path: Path
    entries: frozenset[str] = frozenset()
    problems: list[str] = field(default_factory=list)
    _stamp: tuple[int, int] | None = None
    loads: int = 0

    def refresh(self) -> list[str]:
        """Re-read the file if it changed; returns problems to log (new ones only)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if self._stamp is None and self.loads:
                return []  # still missing: said so already
            self._stamp, self.entries, self.loads = None, frozenset(), self.loads + 1
            self.problems = [
                f"allow list {self.path} cannot be read ({exc.strerror}); every card is denied"
            ]
            return list(self.problems)
        stamp_now = (st.st_mtime_ns, st.st_size)
        if stamp_now == self._stamp:
            return []
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            self._stamp, self.entries = None, frozenset()
            self.problems = [f"allow list {self.path} cannot be read ({exc.strerror})"]
            return list(self.problems)
        self._stamp = stamp_now
        self.loads += 1
        self.entries, self.problems = parse_allow_list(text, str(self.path))
        return list(self.problems)

    def allows(self, pseudonym: str) -> bool:
        """Whether the card is on the list as last read (call `refresh` first)."""
        return pseudonym in self.entries
