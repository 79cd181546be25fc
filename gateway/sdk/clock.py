"""Is the system clock synchronised?  And a running-time clock that NTP steps never move.

A Raspberry Pi has no RTC and boots in the past; when NTP arrives the wall clock jumps
(by a year, say).  Timestamps come from the wall clock and say whether it was synced;
every duration is measured on the kernel's monotonic clock, and a duration that must
outlive the process (an alarm's escalation) on a `RunClock`.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from gateway.sdk.model import ClockState

__all__ = ["Clock", "ClockCheck", "RunClock", "RunMark"]


class ClockCheck(StrEnum):
    """How the gateway knows its clock is right: the kernel's NTP flag, or trust it."""

    KERNEL = "kernel"
    TRUST = "trust"


_TIME_ERROR = 5  # adjtimex() return value: clock not synchronised (STA_UNSYNC set)


@functools.cache
def _adjtimex() -> Callable[[], int]:
    """libc's adjtimex and a buffer for its struct timex, looked up once.

    `ctypes.CDLL(None)` is the process's own symbols, libc's among them:
    `ctypes.util.find_library("c")` ran `/sbin/ldconfig -p` in a child process at
    every check, once a second for as long as the gateway ran.  ctypes itself loads
    here, so a gateway that trusts its clock never imports it.
    """
    import ctypes

    # struct timex is 208 bytes on 64-bit Linux; only the return value is read, but the
    # kernel writes the whole struct, so reserve generously.
    timex = ctypes.create_string_buffer(512)
    call = ctypes.CDLL(None, use_errno=True).adjtimex
    return lambda: int(call(timex))


def _kernel_synced() -> bool:
    state = _adjtimex()()
    return bool(state >= 0 and state != _TIME_ERROR)


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")
    except OSError:
        return None


class Clock:
    """Answers whether timestamps can be trusted; re-checks the kernel once a second.

    The kernel's NTP status (adjtimex) is what chrony, ntpd and systemd-timesyncd all
    set, so it works whatever the image uses. `trust` is for machines whose clock is
    known good (a PC with an RTC, the demo, tests).
    """

    def __init__(self, check: ClockCheck) -> None:
        self.check = check
        self.boot_id = _boot_id()
        self._state = ClockState.SYNCED if check is ClockCheck.TRUST else ClockState.UNSYNCED
        self._checked = -1.0

    def state(self) -> ClockState:
        if self.check is ClockCheck.TRUST:
            return ClockState.SYNCED
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            try:
                synced = _kernel_synced()
            except OSError:
                synced = False
            self._state = ClockState.SYNCED if synced else ClockState.UNSYNCED
        return self._state

    @staticmethod
    def wall() -> datetime:
        """The wall clock, for timestamps only: it may be wrong and may jump."""
        return datetime.now(UTC)

    @staticmethod
    def monotonic() -> float:
        """Seconds on the kernel's monotonic clock: for durations; NTP never steps it."""
        return time.monotonic()

    @staticmethod
    def uptime_ms() -> int:
        return int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000)


@dataclass(frozen=True, slots=True)
class RunMark:
    """Where a `RunClock` stood, stored so that the next process carries on from it.

    `run_s` is the running time at the moment the host's monotonic clock of boot
    `boot_id` read `mono_s`.
    """

    run_s: float
    boot_id: str | None
    mono_s: float

    def to_json(self) -> str:
        return json.dumps({"run_s": self.run_s, "boot_id": self.boot_id, "mono_s": self.mono_s})

    @classmethod
    def from_json(cls, text: str) -> RunMark | None:
        """The mark stored as `text`, or None when it is unreadable (start from zero)."""
        try:
            data = json.loads(text)
            boot_id = data["boot_id"]
            mark = cls(float(data["run_s"]), None if boot_id is None else str(boot_id),
                       float(data["mono_s"]))  # fmt: skip
        except (ValueError, TypeError, KeyError):
            return None
        ok = math.isfinite(mark.run_s) and math.isfinite(mark.mono_s) and mark.run_s >= 0
        return mark if ok else None


class RunClock:
    """Seconds of running time: monotonic, carried across restarts through a `RunMark`.

    Within one boot of the host the kernel's monotonic clock is system-wide, so the
    time the process was down (a crash, an upgrade) counts as well.  After a reboot
    the time the host was off could only be read from the wall clock, which is what
    this clock must not trust: it carries on from the last stored mark, so the time
    off (and whatever ran after the last mark) is not counted.
    """

    def __init__(
        self, base_s: float, mono0_s: float, boot_id: str | None, monotonic: Callable[[], float]
    ) -> None:
        self.boot_id = boot_id
        self._base = base_s
        self._mono0 = mono0_s
        self._monotonic = monotonic

    @classmethod
    def resume(
        cls,
        mark: RunMark | None,
        boot_id: str | None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> RunClock:
        """A clock that carries on from `mark` (from zero without one)."""
        now = monotonic()
        if mark is None:
            base = 0.0
        elif boot_id is not None and mark.boot_id == boot_id and now >= mark.mono_s:
            base = mark.run_s + (now - mark.mono_s)
        else:
            base = mark.run_s
        return cls(base, now, boot_id, monotonic)

    def now(self) -> float:
        return self._base + (self._monotonic() - self._mono0)

    def mark(self) -> RunMark:
        mono = self._monotonic()
        return RunMark(self._base + (mono - self._mono0), self.boot_id, mono)
