"""Thread deaths take the gateway process down, so the service manager restarts it whole.

A worker thread (the MQTT uplink, a sink, anything a library starts) that dies while
the rest of the process runs on leaves a half-alive gateway: drivers poll, the outbox
fills, nothing is published.  `ThreadDeaths` is the one place that notices: it installs
`threading.excepthook` (which Python calls for every thread an exception ends) and hands
the first death to a callback, which stops the gateway with a non-zero exit code.
Threads that are meant to end (a clean stop) end by returning, and are not reported.
"""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

__all__ = ["ThreadDeath", "ThreadDeaths"]

log = logging.getLogger(__name__)


class ThreadDeath:
    """Which thread died, of what and where, in one line."""

    def __init__(self, thread: str, exc: BaseException | None) -> None:
        self.thread = thread
        self.exc = exc

    def __str__(self) -> str:
        if self.exc is None:
            return f"thread {self.thread} died"
        where = ""
        frames = traceback.extract_tb(self.exc.__traceback__)
        if frames:
            where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})"
        return f"thread {self.thread} died: {type(self.exc).__name__}: {self.exc}{where}"


class ThreadDeaths:
    """While entered, the first uncaught exception of any thread calls `on_death` once.

    The death is one log line (thread, exception, file and line); the traceback goes to
    debug.  Later deaths are logged at debug only: the process is already going down.
    A death once `stopping()` is true (a stop was asked for: SIGTERM) is a warning and
    changes nothing: the gateway is going down in order anyway, with exit code 0.
    """

    def __init__(
        self,
        on_death: Callable[[ThreadDeath], None],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self._on_death = on_death
        self._stopping = stopping
        self._lock = threading.Lock()
        self._first: ThreadDeath | None = None
        self._previous: Callable[[threading.ExceptHookArgs], object] | None = None

    @property
    def first(self) -> ThreadDeath | None:
        """The death that stopped the gateway, if any."""
        return self._first

    def __enter__(self) -> ThreadDeaths:
        self._previous = threading.excepthook
        threading.excepthook = self._hook
        return self

    def __exit__(
        self,
        _t: type[BaseException] | None,
        _e: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._previous is not None:
            threading.excepthook = self._previous

    def _hook(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return  # what threading itself ignores
        name = args.thread.name if args.thread is not None else "?"
        death = ThreadDeath(name, args.exc_value)
        if self._first is None and self._stopping():
            log.warning("%s while the gateway was stopping", death)
            return
        with self._lock:
            first = self._first is None
            if first:
                self._first = death
        if not first:
            log.debug("%s while the gateway was already stopping", death)
            return
        log.critical(
            "%s; stopping the gateway (exit 1) so that the service manager restarts it", death
        )
        if args.exc_value is not None:
            log.debug(
                "traceback of thread %s",
                name,
                exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
            )
        self._on_death(death)
