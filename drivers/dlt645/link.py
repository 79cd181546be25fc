"""Thin I/O glue: one meter bus, one request at a time, replies found with `codec.scan`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from drivers.dlt645.codec import Frame, scan
from drivers.dlt645.settings import BusSettings
from gateway.sdk.serialport import LineSettings, SerialPort

__all__ = ["NoReply", "SerialLink"]

# Whatever arrives beyond this without forming a frame is noise; keep memory bounded.
_MAX_BUFFER = 4096
# Meters need a quiet line between their reply and the next request (RS-485
# transceivers turn around); 2 character times at 2400 baud is ~9 ms, so 20 ms is safe.
_TURNAROUND_S = 0.02


class NoReply(Exception):
    """No matching reply within the timeout; `skipped` counts noise bytes seen meanwhile.

    `garbled` is true when bytes did come back but formed no valid frame (a bad
    checksum, garbage): the meter may well have answered, the line corrupted it.
    """

    def __init__(self, message: str, skipped: int = 0) -> None:
        super().__init__(message)
        self.skipped = skipped

    @property
    def garbled(self) -> bool:
        return self.skipped > 0


class SerialLink:
    """A meter bus on the driver kit's serial port; `transact` is serialised by a lock."""

    def __init__(self, bus: BusSettings, logger: logging.Logger | None = None) -> None:
        self.bus = bus
        self.logger = logger or logging.getLogger(__name__)
        self.lock = asyncio.Lock()
        line = LineSettings(bus.baud, parity=str(bus.parity), stopbits=bus.stopbits)
        self.port = SerialPort(bus.port, line, max_buffer=_MAX_BUFFER)
        self._noise = 0

    @property
    def is_open(self) -> bool:
        return self.port.is_open

    @property
    def noise_bytes(self) -> int:
        """Bytes that formed no accepted frame, or that a full buffer pushed out."""
        return self._noise + self.port.dropped

    def open(self) -> None:
        """Open and configure the port; raises PortError with the reason."""
        self.port.open()

    def close(self) -> None:
        self.port.close()

    async def transact(
        self, request: bytes, accept: Callable[[Frame], bool], timeout: float
    ) -> Frame:
        """Send one request and return the first frame `accept` takes.

        Frames it refuses (an echo of the request, a late reply to an earlier request,
        another meter) and garbage are dropped.  Raises NoReply or PortError.
        """
        async with self.lock:
            self.port.check()
            await asyncio.sleep(_TURNAROUND_S)
            # Anything still in the buffer answers nobody's current question.
            self._noise += self.port.discard()
            self.port.write(request)
            return await self._await_reply(accept, timeout)

    async def _await_reply(self, accept: Callable[[Frame], bool], timeout: float) -> Frame:
        deadline = time.monotonic() + timeout
        buf = self.port.buffer
        skipped = 0
        while True:
            while True:
                found = scan(buf)
                del buf[: found.consumed]
                skipped += found.skipped
                if found.frame is None:
                    break
                if accept(found.frame):
                    self._noise += skipped
                    return found.frame
            left = deadline - time.monotonic()
            if left <= 0:
                self._noise += skipped + len(buf)
                # What is left in the buffer may be a reply still arriving: not garbage.
                if skipped:
                    raise NoReply(
                        f"{skipped} bytes within {timeout:g} s but no valid reply "
                        "(bad checksum or garbage)",
                        skipped,
                    )
                raise NoReply(f"no reply within {timeout:g} s")
            await self.port.wait(left)
