"""Thin I/O glue: one receiver's serial port read from the event loop, chunk by chunk."""

from __future__ import annotations

import asyncio
import contextlib
import os
import termios

import serial

__all__ = ["PortClosed", "ReceiverPort"]


class PortClosed(Exception):
    """The port cannot be opened, or went away (receiver unplugged); str() says why."""


class ReceiverPort:
    """A read-only serial port; `read()` returns the next bytes or raises PortClosed."""

    def __init__(self, path: str, baud: int) -> None:
        self.path = path
        self.baud = baud
        self._serial: serial.Serial | None = None
        self._chunks: asyncio.Queue[bytes | PortClosed] = asyncio.Queue()

    def open(self) -> None:
        try:
            port = serial.Serial(
                self.path,
                baudrate=self.baud,
                timeout=0,
                # A second reader (another gateway, a terminal left open) would steal lines.
                exclusive=True,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortClosed(f"cannot open {self.path}: {exc}") from exc
        except termios.error as exc:
            raise PortClosed(f"cannot set {self.path} to {self.baud} baud: {exc.args[-1]}") from exc
        self._serial = port
        self._chunks = asyncio.Queue()
        asyncio.get_running_loop().add_reader(port.fileno(), self._on_readable)

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(port.fileno())
        with contextlib.suppress(Exception):
            port.close()

    async def read(self) -> bytes:
        item = await self._chunks.get()
        if isinstance(item, PortClosed):
            raise item
        return item

    def _on_readable(self) -> None:
        assert self._serial is not None
        fd = self._serial.fileno()
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            self._gone(fd, f"{self.path}: {exc.strerror or exc} (receiver unplugged?)")
            return
        if not chunk:
            self._gone(fd, f"{self.path} was closed (receiver unplugged?)")
            return
        self._chunks.put_nowait(chunk)

    def _gone(self, fd: int, reason: str) -> None:
        asyncio.get_running_loop().remove_reader(fd)
        self._chunks.put_nowait(PortClosed(reason))
