"""Is the system clock synchronised?  A Raspberry Pi has no RTC and boots in the past."""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from pathlib import Path

from gateway.config import ClockCheck
from gateway.model import ClockState

__all__ = ["Clock"]

_TIME_ERROR = 5  # adjtimex() return value: clock not synchronised (STA_UNSYNC set)


class _Timex(ctypes.Structure):
    # struct timex is 208 bytes on 64-bit Linux; only the return value is read, but the
    # kernel writes the whole struct, so reserve generously.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 512)]


def _kernel_synced() -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    state = libc.adjtimex(ctypes.byref(_Timex()))
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
    def uptime_ms() -> int:
        return int(time.clock_gettime(time.CLOCK_BOOTTIME) * 1000)
