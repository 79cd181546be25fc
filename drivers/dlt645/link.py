"""Thin I/O glue: one serial port, one request at a time, replies found with `codec.scan`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import termios
import time
from collections.abc import Callable

import serial

from drivers.dlt645.codec import Frame, scan
from drivers.dlt645.settings import BusSettings

__all__ = ["LinkError", "NoReply", "SerialLink"]

# Whatever arrives beyond this without forming a frame is noise; keep memory bounded.
_MAX_BUFFER = 4096
# Meters need a quiet line between their reply and the next request (RS-485
# transceivers turn around); 2 character times at 2400 baud is ~9 ms, so 20 ms is safe.
_TURNAROUND_S = 0.02


class LinkError(Exception):
    """The serial port cannot be opened or has gone away."""


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
    """A serial port driven from the event loop; `transact` is serialised by a lock."""

    def __init__(self, bus: BusSettings, logger: logging.Logger | None = None) -> None:
        self.bus = bus
        self.logger = logger or logging.getLogger(__name__)
        self.lock = asyncio.Lock()
        self.noise_bytes = 0
        self._serial: serial.Serial | None = None
        self._buf = bytearray()
        self._data = asyncio.Event()
        self._broken: str = ""

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        """Open and configure the port; raises LinkError with the reason."""
        try:
            port = serial.Serial(
                self.bus.port,
                baudrate=self.bus.baud,
                bytesize=serial.EIGHTBITS,
                parity=str(self.bus.parity),
                stopbits=self.bus.stopbits,
                timeout=0,
                write_timeout=2,
                # A second process on the same bus (say `gateway read` while the
                # service runs) would garble both; refuse instead.
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"cannot open {self.bus.port}: {exc}") from exc
        except termios.error as exc:
            # pyserial lets the kernel's refusal of a line setting through as is.
            line = f"{self.bus.baud} 8{self.bus.parity}{self.bus.stopbits}"
            raise LinkError(f"cannot set {self.bus.port} to {line}: {exc.args[-1]}") from exc
        self._serial = port
        self._buf.clear()
        self._broken = ""
        asyncio.get_running_loop().add_reader(port.fileno(), self._on_readable)

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(port.fileno())
        with contextlib.suppress(Exception):
            port.close()

    def _on_readable(self) -> None:
        assert self._serial is not None
        try:
            chunk = os.read(self._serial.fileno(), 1024)
        except BlockingIOError:
            return
        except OSError as exc:
            chunk, self._broken = b"", f"{self.bus.port}: {exc.strerror or exc}"
        if not chunk:
            self._broken = self._broken or f"{self.bus.port} was closed (device unplugged?)"
            asyncio.get_running_loop().remove_reader(self._serial.fileno())
        else:
            self._buf += chunk
            if len(self._buf) > _MAX_BUFFER:
                self.noise_bytes += len(self._buf) - _MAX_BUFFER
                del self._buf[:-_MAX_BUFFER]
        self._data.set()

    async def transact(
        self, request: bytes, accept: Callable[[Frame], bool], timeout: float
    ) -> Frame:
        """Send one request and return the first frame `accept` takes.

        Frames it refuses (an echo of the request, a late reply to an earlier request,
        another meter) and garbage are dropped.  Raises NoReply or LinkError.
        """
        async with self.lock:
            if self._serial is None:
                raise LinkError(f"{self.bus.port} is not open")
            if self._broken:
                raise LinkError(self._broken)
            await asyncio.sleep(_TURNAROUND_S)
            # Anything still in the buffer answers nobody's current question.
            self.noise_bytes += len(self._buf)
            self._buf.clear()
            try:
                self._serial.write(request)
            except (serial.SerialException, OSError) as exc:
                raise LinkError(f"cannot write to {self.bus.port}: {exc}") from exc
            return await self._await_reply(accept, timeout)

    async def _await_reply(self, accept: Callable[[Frame], bool], timeout: float) -> Frame:
        deadline = time.monotonic() + timeout
        skipped = 0
        while True:
            while True:
                found = scan(self._buf)
                del self._buf[: found.consumed]
                skipped += found.skipped
                if found.frame is None:
                    break
                if accept(found.frame):
                    self.noise_bytes += skipped
                    return found.frame
            if self._broken:
                raise LinkError(self._broken)
            left = deadline - time.monotonic()
            if left <= 0:
                self.noise_bytes += skipped + len(self._buf)
                # What is left in the buffer may be a reply still arriving: not garbage.
                if skipped:
                    raise NoReply(
                        f"{skipped} bytes within {timeout:g} s but no valid reply "
                        "(bad checksum or garbage)",
                        skipped,
                    )
                raise NoReply(f"no reply within {timeout:g} s")
            self._data.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._data.wait(), left)
