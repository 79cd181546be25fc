"""One RS-485 bus: a libosdp ControlPanel for all its readers over a pyserial port.

libosdp runs its own thread (`ControlPanel.start()` calls `refresh()` every 20 ms under
a lock) and calls the event handler from that thread while holding the lock, so the
handler only hands the event to the asyncio loop; everything else (status, commands)
is called from the loop's side through `asyncio.to_thread` by the driver.  The port is
non-blocking (`timeout=0`): `read` returns b"" when idle, as libosdp's `Channel` wants.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import osdp
import serial

__all__ = ["Bus", "BusError", "PdConfig", "Queued", "SerialChannel", "answered", "thread_safe_sink"]

EventSink = Callable[[int, dict[str, Any]], None]  # (address, libosdp event dict)
Queued = tuple[int, dict[str, Any], float]  # (address, event, monotonic time it came)


# Seconds between two refreshes of libosdp's state machine.  Its Python thread sleeps
# 20 ms, so a reader's reply (a card read) waited up to 20 ms more before being read:
# about a fifth of the card-to-event latency measured by scripts/bench_latency.py.
# 5 ms costs about 1% of a Pi core.
REFRESH_S = 0.005


class _ControlPanel(osdp.ControlPanel):
    """libosdp's control panel, refreshed every REFRESH_S instead of every 20 ms."""

    @staticmethod
    def refresh(event: threading.Event, lock: threading.Lock, ctx: Any) -> None:
        while not event.is_set():
            with lock:
                ctx.refresh()
            time.sleep(REFRESH_S)


class BusError(Exception):
    """The serial port cannot be opened or failed while in use."""


class SerialChannel(osdp.Channel):
    """libosdp's Channel over a non-blocking pyserial port; remembers the first I/O error.

    No exception may leave these methods: libosdp calls them from C and does not clear
    a pending Python exception, which then breaks its thread (it deadlocked in tests
    when an unplugged port made `termios.tcflush` raise `termios.error`, not OSError).
    """

    def __init__(self, port: serial.Serial) -> None:
        super().__init__()
        self._port = port
        self.error = ""

    def _failed(self, what: str, exc: Exception) -> None:
        self.error = self.error or f"{what} failed: {_why(exc)}"

    def read(self, max_bytes: int) -> bytes:
        try:
            return bytes(self._port.read(max_bytes))
        except Exception as exc:
            self._failed("read", exc)
            return b""

    def write(self, buf: bytes) -> int:
        try:
            return int(self._port.write(buf) or 0)
        except Exception as exc:
            self._failed("write", exc)
            return len(buf)  # said sent: the reply timeout then marks the reader offline

    def flush(self) -> None:
        try:
            self._port.reset_input_buffer()
        except Exception as exc:
            self._failed("flush", exc)


def _why(exc: Exception) -> str:
    # pyserial repeats the port and its own prefix; the errno's text says it all.
    errno = getattr(exc, "errno", None)
    if errno is None and len(exc.args) == 2 and isinstance(exc.args[0], int):
        errno = exc.args[0]  # termios.error: (errno, text)
    if isinstance(errno, int):
        return os.strerror(errno)
    text = str(exc)
    for prefix in ("read failed: ", "write failed: "):
        text = text.removeprefix(prefix)
    return text


@dataclass(frozen=True, slots=True)
class PdConfig:
    """What the control panel needs of one reader."""

    address: int
    scbk: bytes | None
    install_mode: bool
    name: str


class Bus:
    """A control panel for the readers of one port; `start()` opens, `close()` ends it."""

    def __init__(
        self, port: str, baudrate: int, pds: Sequence[PdConfig], on_event: EventSink
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.pds = list(pds)
        self._on_event = on_event
        self._serial: serial.Serial | None = None
        self.channel: SerialChannel | None = None
        self._cp: Any = None
        # start() and close() run in worker threads; a task cancelled while start() runs
        # calls close() at once, which must wait for start() or libosdp's thread leaks.
        self._lifecycle = threading.Lock()
        # And close() may even run first (two free worker threads, close's takes the
        # lock first): a closed bus never starts, or its thread would run on, unstopped.
        self._closed = False

    def start(self) -> None:
        """Open the port and start libosdp's thread (blocking; run it in a worker thread)."""
        with self._lifecycle:
            if self._closed:
                raise BusError("closed before it started")
            self._start()

    def _start(self) -> None:
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=0, write_timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise BusError(f"cannot open it: {_why(exc)}") from exc
        self.channel = SerialChannel(self._serial)
        infos = []
        for pd in self.pds:
            flags = [osdp.LibFlag.EnableNotification]
            if pd.install_mode:
                flags.append(osdp.LibFlag.InstallMode)
            elif pd.scbk is not None:
                flags.append(osdp.LibFlag.EnforceSecure)
            infos.append(
                osdp.PDInfo(pd.address, self.channel, scbk=pd.scbk, name=pd.name, flags=flags)
            )
        addresses = [pd.address for pd in self.pds]

        def handler(index: int, event: dict[str, Any]) -> int:
            # libosdp calls this with the PD's index, not its address (REAL-PEERS.md).
            if 0 <= index < len(addresses):
                self._on_event(addresses[index], event)
            return 0

        # libosdp's C code logs to stderr on its own; only its errors are let through,
        # the driver logs reader state itself through `logging`.
        self._cp = _ControlPanel(infos, log_level=osdp.LogLevel.Error, event_handler=handler)
        self._cp.start()

    def close(self) -> None:
        """Stop libosdp's thread and close the port (blocking, up to a few seconds); final."""
        with self._lifecycle:
            self._closed = True
            self._close()

    def _close(self) -> None:
        if self._cp is not None:
            with contextlib.suppress(RuntimeError):
                self._cp.stop()
            self._cp = None
        if self._serial is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self._serial.close()
            self._serial = None

    def _need(self) -> Any:
        if self._cp is None:
            raise BusError(f"the bus on {self.port} is not started")
        return self._cp

    def masks(self) -> tuple[int, int]:
        """(online, secure channel active) bitmasks by PD index."""
        cp = self._need()
        return int(cp.status()), int(cp.sc_status())

    def online(self) -> dict[int, tuple[bool, bool]]:
        """Each reader's address -> (online, secure channel active)."""
        online, sc = self.masks()
        return {
            pd.address: (bool(online >> i & 1), bool(sc >> i & 1)) for i, pd in enumerate(self.pds)
        }

    def reset(self, address: int, timeout_s: float = 1.0) -> bool:
        """Make libosdp try an offline reader again now instead of after its 300 s pause."""
        cp = self._need()
        cp.disable_pd(address)
        deadline = time.monotonic() + timeout_s
        # enable_pd fails until the refresh thread has handled the disable.
        while time.monotonic() < deadline:
            if cp.enable_pd(address):
                return True
            time.sleep(0.03)
        return False

    def submit(self, address: int, command: dict[str, Any]) -> bool:
        """Queue a command for a reader; False if libosdp refused it."""
        return bool(self._need().submit_command(address, command))

    def capability(self, address: int, code: int) -> tuple[int, int]:
        """(compliance level, number of items) the reader declared for a capability."""
        level, items = self._need().check_capability(address, code)
        return int(level), int(items)

    def identity(self, address: int) -> dict[str, int]:
        """The reader's ID report (vendor, model, version, serial, firmware)."""
        pd_id = self._need().get_pd_id(address)
        return {
            "vendor_code": pd_id.vendor_code & 0xFFFFFF,
            "model": pd_id.model,
            "version": pd_id.version,
            "serial_number": pd_id.serial_number & 0xFFFFFFFF,
            "firmware_version": pd_id.firmware_version & 0xFFFFFF,
        }


def answered(bus: Bus, address: int) -> bool:
    """True if the reader at `address` has sent libosdp its ID report (all zero until then)."""
    try:
        return any(bus.identity(address).values())
    except Exception:  # a closed bus or a C-level refusal: no evidence it answered
        return False


def thread_safe_sink(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Queued]) -> EventSink:
    """An event sink for libosdp's thread that hands events to `queue` on `loop`."""

    def sink(address: int, event: dict[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing: nothing to deliver to
            loop.call_soon_threadsafe(queue.put_nowait, (address, dict(event), time.monotonic()))

    return sink
