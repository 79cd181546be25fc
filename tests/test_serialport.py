"""The driver kit's serial port against a real socat pty pair: bytes, bounds, faults."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from gateway.sdk.serialport import LineSettings, PortError, SerialPort
from tests.peers import PtyPair, pty_pair

LINE = LineSettings(9600)


def _far_end(pair: PtyPair) -> int:
    return os.open(pair.b, os.O_RDWR | os.O_NOCTTY)


async def _read_until(port: SerialPort, want: int) -> bytes:
    got = b""
    async with asyncio.timeout(5):
        while len(got) < want:
            got += await port.read()
    return got


def test_bytes_both_ways_and_a_missing_port_named_in_one_line(tmp_path: Path) -> None:
    async def main() -> None:
        with pty_pair(tmp_path) as pair:
            port = SerialPort(str(pair.a), LINE)
            port.open()
            far = _far_end(pair)
            try:
                os.write(far, b"hello\r\n")
                assert await _read_until(port, 7) == b"hello\r\n"
                port.write(b"ping")
                assert os.read(far, 16) == b"ping"
            finally:
                port.close()
                os.close(far)
        missing = SerialPort(str(tmp_path / "ttyNone"), LINE)
        with pytest.raises(PortError) as err:
            missing.open()
        assert str(err.value).startswith(f"cannot open {tmp_path / 'ttyNone'}")
        assert "\n" not in str(err.value)
        with pytest.raises(PortError, match="is not open"):
            missing.write(b"x")

    asyncio.run(main())


def test_a_line_that_never_stops_talking_costs_at_most_the_buffer(tmp_path: Path) -> None:
    async def main() -> None:
        with pty_pair(tmp_path) as pair:
            port = SerialPort(str(pair.a), LINE, max_buffer=1000)
            port.open()
            far = _far_end(pair)
            try:
                sent = bytes(range(256)) * 40  # 10,240 bytes, nobody reading
                for i in range(0, len(sent), 512):
                    os.write(far, sent[i : i + 512])
                    await asyncio.sleep(0)  # let the loop gather what arrived
                async with asyncio.timeout(5):
                    while port.dropped + len(port.buffer) < len(sent):
                        await port.wait(0.05)
                kept = len(port.buffer)
                assert kept <= 1000
                assert port.dropped == len(sent) - kept
                assert await port.read() == sent[-kept:]  # the newest bytes, in order
            finally:
                port.close()
                os.close(far)

    asyncio.run(main())


def test_wait_returns_after_its_timeout_when_the_line_is_silent(tmp_path: Path) -> None:
    async def main() -> None:
        with pty_pair(tmp_path) as pair:
            port = SerialPort(str(pair.a), LINE)
            port.open()
            try:
                started = time.monotonic()
                await port.wait(0.2)
                assert 0.15 <= time.monotonic() - started < 3.0
                assert port.buffer == b""
            finally:
                port.close()

    asyncio.run(main())


def test_a_port_that_goes_away_says_so_after_the_bytes_it_gave(tmp_path: Path) -> None:
    async def main() -> None:
        with pty_pair(tmp_path) as pair:
            port = SerialPort(str(pair.a), LINE, unplugged="receiver")
            port.open()
            try:
                far = _far_end(pair)
                os.write(far, b"last words")
                os.close(far)
                assert await _read_until(port, 10) == b"last words"
                pair.proc.terminate()  # the adapter is pulled
                async with asyncio.timeout(5):
                    with pytest.raises(PortError) as err:
                        while True:
                            await port.read()
                assert str(pair.a) in str(err.value)
                assert "receiver unplugged?" in str(err.value)
                with pytest.raises(PortError):
                    port.write(b"x")
            finally:
                port.close()

    asyncio.run(main())
