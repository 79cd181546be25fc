"""A self-pipe: other threads wake a thread that waits in select() (the uplink's loop)."""

from __future__ import annotations

import contextlib
import os
import threading

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
        # After close() the numbers may belong to another file: a late wake() (the
        # writer's last commit at shutdown) must not write a byte into it.
        self._closing = threading.Lock()

    def fileno(self) -> int:
        return self._r

    def wake(self) -> None:
        with self._closing, contextlib.suppress(OSError):  # full: a wake-up is pending
            if self._w >= 0:
                os.write(self._w, b"\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            while os.read(self._r, 4096):
                pass

    def close(self) -> None:
        with self._closing:
            fds, self._r, self._w = (self._r, self._w), -1, -1
        for fd in fds:
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
