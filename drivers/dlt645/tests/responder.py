"""A DL/T 645-2007 meter bus for tests: simulated meters answering on the far end of a pty.

Built on the driver's own pure codec, running in a thread: it reads request frames,
and each addressed meter answers the way a real one does (FE preamble, data +0x33,
checksum), refuses unknown data identifiers with an abnormal reply, and stays silent
when the address is not its own.  A meter can be told to garble its replies to some
data identifiers, as a badly terminated or unshielded line does.
"""

from __future__ import annotations

import os
import select
import termios
import threading
import time
import tty
from dataclasses import dataclass, field
from pathlib import Path

from drivers.dlt645.codec import (
    BROADCAST_ADDRESS,
    ErrorFlags,
    Frame,
    Function,
    bcd_encode,
    encode_frame,
    scan,
)

__all__ = ["Bus", "SimMeter", "bcd_value"]


def bcd_value(value: int, size: int, *, negative: bool = False) -> bytes:
    """A value as the meter sends it: BCD, least significant byte first, sign in bit 7."""
    raw = bytearray(bcd_encode(value, size))
    if negative:
        raw[-1] |= 0x80
    return bytes(raw)


@dataclass
class SimMeter:
    """One meter: its address and the raw value bytes it holds per data identifier."""

    address: str
    values: dict[int, bytes] = field(default_factory=dict)
    requests: int = 0
    slow: dict[int, float] = field(default_factory=dict)  # DI -> seconds before answering
    # DI -> how its reply is damaged on the line: "checksum" (one bit flipped in the
    # checksum) or "garbage" (the reply's bytes replaced by line noise).
    garble: dict[int, str] = field(default_factory=dict)

    def wire(self, request: Frame) -> bytes | None:
        """The bytes of the reply as they arrive at the gateway, damaged or not."""
        reply = self.answer(request)
        if reply is None:
            return None
        raw = bytearray(encode_frame(reply))
        damage = self.garble.get(int.from_bytes(request.data[:4], "little"))
        if damage == "checksum":
            raw[-2] ^= 0x01
        elif damage == "garbage":
            raw = bytearray(b"\x00\xff\x33" * (len(raw) // 3))
        return bytes(raw)

    def answer(self, request: Frame) -> Frame | None:
        if request.function == Function.READ_ADDRESS:
            wire = bytes.fromhex(self.address)[::-1]
            return Frame(self.address, 0x80 | Function.READ_ADDRESS, wire)
        if request.function != Function.READ_DATA or len(request.data) != 4:
            return Frame(self.address, 0xC0 | request.function, bytes([ErrorFlags.OTHER]))
        di = int.from_bytes(request.data, "little")
        value = self.values.get(di)
        if value is None:
            return Frame(self.address, 0xC0 | Function.READ_DATA, bytes([ErrorFlags.NO_DATA]))
        return Frame(self.address, 0x80 | Function.READ_DATA, request.data + value)


class Bus(threading.Thread):
    """The meters sharing one RS-485 line, answering on `port` until `stop()`.

    `noise` is written before every reply (line noise, another device's bytes);
    `echo` sends each request back first, as half-duplex adapters without echo
    suppression do.
    """

    def __init__(
        self, port: Path, meters: list[SimMeter], *, noise: bytes = b"", echo: bool = False
    ) -> None:
        super().__init__(daemon=True, name=f"dlt645-bus {port}")
        self.port = port
        self.meters = {m.address: m for m in meters}
        self.noise = noise
        self.echo = echo
        self.lock = threading.Lock()  # tests change meter values while the bus runs
        self.requests: list[Frame] = []
        self._halt = threading.Event()
        self._ready = threading.Event()

    def __enter__(self) -> Bus:
        self.start()
        assert self._ready.wait(5), "responder did not open its pty"
        return self

    def __exit__(self, *_: object) -> None:
        self._halt.set()
        self.join(5)

    def set_value(self, address: str, di: int, raw: bytes) -> None:
        with self.lock:
            self.meters[address].values[di] = raw

    def run(self) -> None:
        fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd, termios.TCSANOW)
            self._ready.set()
            buf = bytearray()
            while not self._halt.is_set():
                readable, _, _ = select.select([fd], [], [], 0.05)
                if not readable:
                    continue
                buf += os.read(fd, 1024)
                while True:
                    found = scan(buf)
                    del buf[: found.consumed]
                    if found.frame is None:
                        break
                    self._serve(fd, found.frame)
        finally:
            os.close(fd)

    def _serve(self, fd: int, request: Frame) -> None:
        if request.is_reply:
            return
        with self.lock:
            self.requests.append(request)
            if self.echo:
                os.write(fd, encode_frame(request))
            if request.address == BROADCAST_ADDRESS:
                targets = list(self.meters.values())
            else:
                meter = self.meters.get(request.address)
                targets = [meter] if meter is not None else []
            replies = []
            for meter in targets:
                meter.requests += 1
                if len(request.data) == 4:
                    time.sleep(meter.slow.get(int.from_bytes(request.data, "little"), 0.0))
                reply = meter.wire(request)
                if reply is not None:
                    replies.append(reply)
            if len(replies) > 1:
                # Meters answering at once on one pair of wires garble each other.
                os.write(fd, self.noise + _collide(replies))
            elif replies:
                os.write(fd, self.noise + replies[0])


def _collide(replies: list[bytes]) -> bytes:
    out = bytearray()
    for column in zip(*replies, strict=False):
        acc = 0xFF
        for byte in column:
            acc &= byte  # RS-485 is wired-AND-like when two drivers fight: zeros win
        out.append(acc)
    return bytes(out)
