"""A serial port read from the event loop into a bounded buffer (pyserial, no thread).

For drivers whose protocol code takes bytes: a receiver that sends lines, a meter bus
asked one request at a time.  The port is opened non-blocking and exclusive, bytes are
gathered by the event loop's `add_reader` as they come, and a port that goes away
(adapter unplugged) turns into one `PortError` saying so.  The buffer holds at most
`max_buffer` bytes: a line that never stops talking costs that much memory, no more;
what it pushes out is counted in `dropped`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios
from dataclasses import dataclass

import serial

__all__ = ["LineSettings", "PortError", "SerialPort"]

_READ_CHUNK = 4096


class PortError(Exception):
    """The port cannot be opened, or went away; str() names the port and why."""


@dataclass(frozen=True, slots=True)
class LineSettings:
    """Baud rate and character framing of a serial line (8N1 unless told otherwise)."""

    baud: int
    parity: str = "N"  # N, E or O, as pyserial takes it
    stopbits: int = 1
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.baud} {self.bytesize}{self.parity}{self.stopbits}"


class SerialPort:
    """One serial port: `open`, then `read` or `wait` for bytes, `write`, `close`.

    `unplugged` names what is at the other end ("receiver", "meter adapter") in the
    message of a port that went away, so the log says what to check.
    """

    def __init__(
        self,
        path: str,
        line: LineSettings,
        *,
        max_buffer: int = 4096,
        unplugged: str = "device",
    ) -> None:
        self.path = path
        self.line = line
        self.max_buffer = max_buffer
        self.unplugged = unplugged
        self.buffer = bytearray()  # received, not yet taken; callers may consume from it
        self.dropped = 0  # bytes pushed out of a full buffer
        self._serial: serial.Serial | None = None
        self._data = asyncio.Event()
        self._broken = ""

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        """Open and configure the port; PortError with the reason if it cannot be."""
        try:
            port = serial.Serial(
                self.path,
                baudrate=self.line.baud,
                bytesize=self.line.bytesize,
                parity=self.line.parity,
                stopbits=self.line.stopbits,
                timeout=0,
                write_timeout=2,
                # A second reader (another gateway, `gateway read` while the service
                # runs, a terminal left open) would steal or garble bytes: refuse.
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortError(f"cannot open {self.path}: {exc}") from exc
        except termios.error as exc:
            # pyserial lets the kernel's refusal of a line setting through as is.
            raise PortError(f"cannot set {self.path} to {self.line}: {exc.args[-1]}") from exc
        self._serial = port
        self.buffer.clear()
        self._broken = ""
        self._data.clear()
        asyncio.get_running_loop().add_reader(port.fileno(), self._on_readable)

    def close(self) -> None:
        """Close the port (idempotent); `open` may be called again."""
        port, self._serial = self._serial, None
        if port is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(port.fileno())
        with contextlib.suppress(Exception):
            port.close()

    def check(self) -> None:
        """Raise PortError if the port is not open or has gone away."""
        if self._broken:
            raise PortError(self._broken)
        if self._serial is None:
            raise PortError(f"{self.path} is not open")

    async def wait(self, timeout: float) -> None:
        """Return when bytes arrived since the last call, or after `timeout` seconds.

        Raises PortError when the port has gone away (bytes received before that stay
        in `buffer`).
        """
        if not self._data.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._data.wait()
        self._data.clear()
        self.check()

    async def read(self) -> bytes:
        """The bytes received so far, waiting until there are some; PortError when gone."""
        while not self.buffer:
            self.check()
            await self._data.wait()
            self._data.clear()
        chunk = bytes(self.buffer)
        self.buffer.clear()
        return chunk

    def discard(self) -> int:
        """Forget the bytes received so far (they answer no current question); how many."""
        n = len(self.buffer)
        self.buffer.clear()
        return n

    def write(self, data: bytes) -> None:
        """Send `data`; PortError when the port is closed, gone or refuses it."""
        self.check()
        assert self._serial is not None
        try:
            self._serial.write(data)
        except (serial.SerialException, OSError) as exc:
            raise PortError(f"cannot write to {self.path}: {exc}") from exc

    def _on_readable(self) -> None:
        port = self._serial
        if port is None:
            return
        try:
            chunk = os.read(port.fileno(), _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            chunk, self._broken = b"", f"{self.path}: {exc.strerror or exc}"
        if chunk:
            self.buffer += chunk
            excess = len(self.buffer) - self.max_buffer
            if excess > 0:
                self.dropped += excess
                del self.buffer[:excess]
        else:
            reason = self._broken or f"{self.path} was closed"
            self._broken = f"{reason} ({self.unplugged} unplugged?)"
            asyncio.get_running_loop().remove_reader(port.fileno())
        self._data.set()
