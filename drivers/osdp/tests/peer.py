"""A libosdp PeripheralDevice as the reader on the far end of a socat pty pair.

Several peripherals can share one line, like readers on one RS-485 bus: each gets a
`Tap` of the same `SharedLine`, and every byte from the control panel reaches every
tap (each peripheral ignores frames for other addresses).  This is the transport
boundary; everything above it is the real libosdp on both ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import osdp
import serial

from tests.driverkit import until

__all__ = ["ReaderPeer", "SharedLine", "swipe_until"]


class SharedLine:
    """The peripherals' end of the bus: one pty, fanned out to every tap."""

    def __init__(self, path: Path) -> None:
        self.port = serial.Serial(str(path), 115200, timeout=0, write_timeout=0)
        self.lock = threading.Lock()
        self.taps: list[Tap] = []

    def tap(self) -> Tap:
        tap = Tap(self)
        self.taps.append(tap)
        return tap

    def pull(self) -> None:
        data = self.port.read(4096)
        if data:
            for tap in self.taps:
                tap.rx.extend(data)

    def inject(self, data: bytes) -> None:
        """Bytes on the line from nowhere: noise, a foreign device."""
        with self.lock:
            self.port.write(data)

    def close(self) -> None:
        self.port.close()


class Tap(osdp.Channel):
    """One peripheral's view of the shared line."""

    def __init__(self, line: SharedLine) -> None:
        super().__init__()
        self.line = line
        self.rx = bytearray()

    # Nothing may raise into libosdp's C code (see drivers/osdp/bus.py SerialChannel).
    def read(self, max_bytes: int) -> bytes:
        with self.line.lock:
            try:
                self.line.pull()
            except Exception:
                return b""
            out = bytes(self.rx[:max_bytes])
            del self.rx[:max_bytes]
            return out

    def write(self, buf: bytes) -> int:
        with self.line.lock:
            try:
                return int(self.line.port.write(buf) or 0)
            except Exception:
                return 0

    def flush(self) -> None:
        pass


class _Peripheral(osdp.PeripheralDevice):
    """libosdp's peripheral, answering within a few ms as reader hardware does.

    Its Python thread would sleep 20 ms between refreshes, adding up to 20 ms to every
    reply that a real reader does not add.
    """

    @staticmethod
    def refresh(event: threading.Event, lock: threading.Lock, ctx: Any) -> None:
        while not event.is_set():
            with lock:
                ctx.refresh()
            time.sleep(0.002)


class ReaderPeer:
    """A card reader with LED and buzzer at `address`; records the commands it gets."""

    def __init__(self, line: SharedLine, address: int, scbk: bytes | None = None) -> None:
        caps = osdp.PDCapabilities(
            [
                (osdp.Capability.LEDControl, 1, 1),
                (osdp.Capability.AudibleControl, 1, 1),
                (osdp.Capability.Readers, 1, 1),
                (osdp.Capability.CommunicationSecurity, 1, 1),
            ]
        )
        ident = osdp.PdId(2, 5, 0x0A1B2C, 0x12345678, 0x010203)
        self.tap = line.tap()
        info = osdp.PDInfo(address, self.tap, scbk=scbk, id=ident)
        self.commands: list[dict[str, Any]] = []
        self.pd = _Peripheral(
            info, caps, log_level=osdp.LogLevel.Error, command_handler=self._command
        )
        self.running = False

    def _command(self, command: dict[str, Any]) -> tuple[int, None]:
        self.commands.append(command)
        return 0, None

    def start(self) -> None:
        with self.tap.line.lock:
            self.tap.rx.clear()  # a powered-off reader heard nothing
        self.pd.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.pd.stop()
            self.running = False

    def card(self, data: bytes, bits: int = 26, reader_no: int = 0) -> None:
        self.pd.submit_event(
            {
                "event": osdp.Event.CardRead,
                "reader_no": reader_no,
                "direction": 0,
                "length": bits,
                "format": osdp.CardFormat.Wiegand,
                "data": data,
            }
        )

    def keys(self, keys: bytes) -> None:
        self.pd.submit_event({"event": osdp.Event.KeyPress, "reader_no": 0, "data": keys})

    def manufacturer_reply(self, data: bytes) -> None:
        """A vendor-specific reply (osdp_MFGREP), which the driver does not use."""
        self.pd.submit_event(
            {
                "event": osdp.Event.ManufacturerReply,
                "vendor_code": 0x0A1B2C,
                "mfg_command": 1,
                "data": data,
            }
        )

    def tamper(self, active: bool) -> None:
        self.pd.submit_event(
            {
                "event": osdp.Event.Status,
                "type": osdp.StatusReportType.Local,
                "nr_entries": 2,
                "report": bytes([int(active), 0]),
            }
        )


async def swipe_until(
    peer: ReaderPeer, data: bytes, seen: Callable[[], bool], *, every_s: float = 3.0, tries: int = 5
) -> None:
    """Present the card until `seen()`, again every `every_s`, as a person whose card
    the reader missed does.  On a shared line a reply can be lost: libosdp's control
    panel takes a late reply of one reader for another's ("Invalid pd address"),
    restarts that session, and the event the reply carried is not sent again.
    TimeoutError after `tries` presentations."""
    for _ in range(tries):
        peer.card(data)
        with contextlib.suppress(TimeoutError):
            await until(seen, timeout=every_s)
            return
    raise TimeoutError(f"the card was presented {tries} times and never seen")
