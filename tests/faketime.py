"""A wall clock that a test steps for one child process only, with libfaketime.

The child gets libfaketime preloaded and reads its offset from a file on every call
(FAKETIME_NO_CACHE), so writing the file steps its wall clock while it runs, as NTP
does.  CLOCK_MONOTONIC is left alone (FAKETIME_DONT_FAKE_MONOTONIC): a real NTP step
never moves it.  The system clock is never touched.

libfaketime 0.9.10 (Debian 12) breaks `clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME)`
when monotonic is not faked (wolfcw/libfaketime#426): Python 3.11's `time.sleep` then
fails with EINVAL.  The gateway sleeps through asyncio and Event.wait, which are not
affected; a child that needs `time.sleep` cannot run under it.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FakeTime", "libfaketime"]


def libfaketime() -> str | None:
    """Path of the multi-threaded libfaketime (Debian package `faketime`), if installed."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1"))
    return found[0] if found else None


@dataclass
class FakeTime:
    """The offset file of one child's wall clock; `env()` goes into the child's environment."""

    path: Path

    def __post_init__(self) -> None:
        self.set("+0")

    def set(self, offset: str) -> None:
        """Step the child's wall clock to `offset` from the real one: "+1h", "-1h", "+365d"."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(offset + "\n")
        tmp.replace(self.path)  # the child never reads a half-written file

    def env(self) -> dict[str, str]:
        lib = libfaketime()
        if lib is None:
            raise RuntimeError("libfaketime is not installed (apt-get install faketime)")
        return {
            "LD_PRELOAD": lib,
            "FAKETIME_TIMESTAMP_FILE": str(self.path),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
