"""A self-pipe: other threads wake a thread that waits in select() (the uplink's loop)."""

from __future__ import annotations

import contextlib
import os

__all__ = ["WakePipe"]


class WakePipe:
    """`wake()` from any thread makes the read end readable until `drain()`.

    Both ends are non-blocking: a full pipe already holds a wake-up, and the outbox's
    writer, which wakes the uplink after every commit, must never block on it, also
    while the uplink itself waits for the writer (`Outbox.flush_acks`).
    """

    def __init__(self) -> None:
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def fileno(self) -> int:
        return self._r

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed
            os.write(self._w, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._r, 4096):
                pass

    def close(self) -> None:
        for fd in (self._r, self._w):
            with contextlib.suppress(OSError):
                os.close(fd)
