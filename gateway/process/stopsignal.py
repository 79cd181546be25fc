"""SIGTERM and SIGINT caught from the first moment of `gateway run`, not only once it runs.

The event loop's handlers exist only after the config, the drivers and the runtime are
imported and built: seconds on a busy Pi.  Until then the default action of SIGTERM
kills the process (systemd sees a kill, not a stop) and SIGINT prints a traceback.
`catch()` installs plain handlers first, before any heavy import; the service hands
them over to the loop and stops at once when a signal came during the start.

Imports the standard library only, so that installing the handlers costs nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import asyncio  # 50 ms to import: after the handlers, not before

__all__ = ["STOP_SIGNALS", "StopSignals", "catch"]

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Remembers the first stop signal; `attach` passes later ones to an asyncio event."""

    def __init__(self) -> None:
        self._received = threading.Event()
        self.signal: signal.Signals | None = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Only records: whatever the main thread was doing (an import, reading the
        # config) finishes, and the start-up checks `received` before it builds anything.
        if self.signal is None:
            self.signal = signal.Signals(signum)
        self._received.set()

    @property
    def received(self) -> bool:
        """Whether a stop signal has come since `catch()`."""
        return self._received.is_set()

    def attach(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        """From now on a stop signal sets `stop`; one that came before sets it at once."""
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_loop_signal, sig, stop)
        # After the loop's handlers are in: a signal between the two steps is not lost.
        if self.received:
            stop.set()

    def _on_loop_signal(self, sig: signal.Signals, stop: asyncio.Event) -> None:
        log.info("%s: stopping", sig.name)
        if self.signal is None:
            self.signal = sig
        self._received.set()
        stop.set()


def catch() -> StopSignals:
    """Install the stop handlers now (main thread); the returned object holds what came."""
    signals = StopSignals()
    for sig in STOP_SIGNALS:
        signal.signal(sig, signals._handle)
    return signals
