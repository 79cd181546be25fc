"""The driver against a receiver simulated on the far end of a socat pty pair."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.serial_line import DRIVER
from gateway.config import load_config
from gateway.sdk.driver import DeviceSpec, DriverHealth
from gateway.sdk.model import EventType
from tests.driverkit import config_with_devices, events, run_driver, until
from tests.peers import PtyPair, pty_pair
from tests.recording import RecordingContext

PENDANT, DETECTOR, SPARE = "1A2B3C", "00BEEF", "C0FFEE"


def load(
    tmp_path: Path, port: Path, devices: dict[str, tuple[str, str]], **driver: Any
) -> list[DeviceSpec]:
    """Devices {id: (kind, code)} on one port, through the real config loader."""
    entries = [
        {
            "id": device_id,
            "kind": kind,
            "location": {"building": "1", "unit": device_id},
            "driver": {"type": "serial_line", "port": str(port), "code": code, **driver},
        }
        for device_id, (kind, code) in devices.items()
    ]
    path = config_with_devices(tmp_path, entries)
    # allow_conflicts: these tests give the driver conflicting devices on purpose.
    return list(load_config(path, drivers={"serial_line": DRIVER}, allow_conflicts=True).devices)


def standard(tmp_path: Path, port: Path, **driver: Any) -> list[DeviceSpec]:
    return load(
        tmp_path,
        port,
        {
            "pendant-101": ("elderly_alarm", PENDANT),
            "smoke-101": ("smoke", DETECTOR),
            "pendant-102": ("elderly_alarm", SPARE),
        },
        **driver,
    )


class Receiver:
    """The receiver's side of the line: writes what a real one prints."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_NOCTTY)

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def line(self, text: str) -> None:
        self.write(text.encode() + b"\r\n")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


def run(
    specs: list[DeviceSpec],
    ctx: RecordingContext,
    script: Callable[[], Awaitable[None]],
    timeout: float = 20.0,
) -> DriverHealth:
    """Run the driver until its port is open, then the script; return the driver's health."""
    ready = lambda: any(a for a, _ in ctx.availability.values())  # noqa: E731
    return run_driver(DRIVER, specs, ctx, ready, script, timeout)


async def marker(rx: Receiver, ctx: RecordingContext) -> None:
    """A fall from the spare pendant; once it is emitted, every earlier line was handled."""
    before = len(events(ctx, "pendant-102"))
    rx.line(f"RX {SPARE} FALL")
    await until(lambda: len(events(ctx, "pendant-102")) > before)


def test_repeats_of_one_press_within_the_window_are_one_event(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    rx = Receiver(ptys.b)

    async def script() -> None:
        for _ in range(4):  # the press and 3 repeats, as a pendant sends them
            rx.line(f"RX {PENDANT} SOS")
            await asyncio.sleep(0.15)
        await marker(rx, ctx)

    health = run(standard(tmp_path, ptys.a), ctx, script)  # the profile's 3 s window
    rx.close()
    sos = events(ctx, "pendant-101")
    assert [e.type for e in sos] == [EventType.ELDERLY_SOS]
    assert sos[0].data == {"code": PENDANT, "signal": "SOS"}
    assert sos[0].device.kind == "elderly_alarm"
    assert health.extra["repeats"] == 3
    assert health.devices_online == health.devices_total == 3


def test_two_presses_outside_the_window_are_two_events(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    rx = Receiver(ptys.b)

    async def script() -> None:
        for _ in range(2):
            rx.line(f"RX {PENDANT} SOS")
            await asyncio.sleep(0.05)
            rx.line(f"RX {PENDANT} SOS")  # a repeat of the same press
            await asyncio.sleep(0.6)  # longer than the 0.4 s window: the next is a new press
        rx.line(f"RX {PENDANT} FALL")  # another function of the same pendant: its own event
        await marker(rx, ctx)

    run(standard(tmp_path, ptys.a, dedupe_s=0.4), ctx, script)
    rx.close()
    assert [e.type for e in events(ctx, "pendant-101")] == [
        EventType.ELDERLY_SOS,
        EventType.ELDERLY_SOS,
        EventType.ELDERLY_FALL,
    ]


def test_garbage_between_lines_is_ignored_logged_once_and_counted(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = recording_ctx
    caplog.set_level(logging.DEBUG, logger=ctx.logger.name)
    rx = Receiver(ptys.b)

    async def script() -> None:
        rx.write(b"# RFRX v2.1 ready\r\nOK\r\n")  # the receiver's own chatter: not a problem
        rx.line(f"RX {PENDANT} SOS")
        rx.write(b"\x00\x13 noise ~~ \r\n")
        rx.write(b"RX 1A2B3C S\xffS\r\n")  # a bit flip: not UTF-8
        rx.write(b"RX 1A2B")  # a line cut short by interference...
        rx.line("##?? RX!!")  # ...ends in garbage
        rx.write(b"A" * 5000)  # a wrong baud rate: no newline for more than 4 KiB
        rx.write(b"A" * 3000 + b"\n")
        rx.line(f"RX {PENDANT} BEEP")  # a function the profile does not know
        rx.line(f"RX {DETECTOR} SMOKE")
        rx.line(f"RX {DETECTOR} LOWBAT")
        await marker(rx, ctx)

    health = run(standard(tmp_path, ptys.a), ctx, script)
    rx.close()
    assert [(e.device.id, e.type) for e in events(ctx)] == [
        ("pendant-101", EventType.ELDERLY_SOS),
        ("smoke-101", EventType.SMOKE_ALARM),
        ("smoke-101", EventType.DEVICE_BATTERY_LOW),
        ("pendant-102", EventType.ELDERLY_FALL),
    ]
    assert health.extra["garbage"] == 2
    assert health.extra["bad_encoding"] == 1
    assert health.extra["too_long"] == 1
    assert health.extra["unknown_function"] == 1
    assert health.errors == 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("(garbage;" in w for w in warnings) == 1, warnings
    assert sum("(bad_encoding;" in w for w in warnings) == 1, warnings
    assert sum("(too_long;" in w for w in warnings) == 1, warnings


# Writes its argv[2:] (hex) to the tty argv[1], one write each, as a receiver's UART does.
_WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NOCTTY)
for chunk in sys.argv[2:]:
    os.write(fd, bytes.fromhex(chunk))
    time.sleep(0.02)
os.close(fd)
"""


def write_from_another_process(tty: Path, *chunks: bytes) -> None:
    subprocess.run(
        [sys.executable, "-c", _WRITER, str(tty), *(c.hex() for c in chunks)],
        check=True,
        timeout=10,
    )


def test_cr_lf_crlf_and_noise_before_a_line_from_a_real_writer(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = recording_ctx
    caplog.set_level(logging.DEBUG, logger=ctx.logger.name)

    async def script() -> None:
        await asyncio.to_thread(
            write_from_another_process,
            ptys.b,
            f"RX {PENDANT} SOS\r".encode(),  # a receiver ending lines with CR alone
            f"RX {DETECTOR} SMOKE\n".encode(),  # LF alone
            f"RX {DETECTOR} LOWBAT\r".encode(),  # CRLF, cut between CR and LF by the reads
            b"\n",
            f"\x00\xffRX {PENDANT} FALL\r\n".encode("latin-1"),  # noise on the radio UART
        )
        await marker(Receiver(ptys.b), ctx)

    health = run(standard(tmp_path, ptys.a), ctx, script)
    assert [(e.device.id, e.type) for e in events(ctx)] == [
        ("pendant-101", EventType.ELDERLY_SOS),
        ("smoke-101", EventType.SMOKE_ALARM),
        ("smoke-101", EventType.DEVICE_BATTERY_LOW),
        ("pendant-101", EventType.ELDERLY_FALL),
        ("pendant-102", EventType.ELDERLY_FALL),
    ]
    assert health.extra["lines"] == 5  # the LF of the CRLF is no line of its own
    assert health.extra["skipped"] == 1 and health.extra["skipped_bytes"] == 2
    assert health.extra["bad_encoding"] == health.extra["garbage"] == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("skipped 2 bytes of noise" in w and "(skipped;" in w for w in warnings) == 1


def test_a_code_no_device_owns_is_logged_once(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = recording_ctx
    caplog.set_level(logging.INFO, logger=ctx.logger.name)
    rx = Receiver(ptys.b)

    async def script() -> None:
        for _ in range(3):  # an installer pairing a new pendant presses it again and again
            rx.line("RX ABCDEF SOS")
            await asyncio.sleep(0.05)
        await marker(rx, ctx)

    health = run(standard(tmp_path, ptys.a), ctx, script)
    rx.close()
    assert [e.device.id for e in events(ctx)] == ["pendant-102"]
    mentions = [r for r in caplog.records if "ABCDEF" in r.getMessage()]
    assert len(mentions) == 1
    assert mentions[0].levelno == logging.WARNING
    assert 'code: "ABCDEF"' in mentions[0].getMessage()
    assert health.extra["unknown_code"] == 3


def test_unplugged_receiver_marks_its_devices_unavailable_then_recovers(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    peers = contextlib.ExitStack()
    pair = peers.enter_context(pty_pair(tmp_path))
    specs = standard(tmp_path, pair.a)

    async def script() -> None:
        await asyncio.to_thread(peers.close)  # the USB receiver is pulled out
        await until(lambda: not any(a for a, _ in ctx.availability.values()))
        assert set(ctx.availability) == {"pendant-101", "smoke-101", "pendant-102"}
        for _, reason in ctx.availability.values():
            assert str(pair.a) in reason and "unplugged" in reason
        # plugged back in: the driver retries with backoff and finds it again
        again = await asyncio.to_thread(peers.enter_context, pty_pair(tmp_path))
        await until(lambda: all(a for a, _ in ctx.availability.values()), timeout=8)
        rx = Receiver(again.b)
        try:
            rx.line(f"RX {DETECTOR} SMOKE")
            await until(lambda: len(events(ctx)) == 1)
        finally:
            rx.close()

    try:
        health = run(specs, ctx, script)
    finally:
        peers.close()
    assert events(ctx)[0].type is EventType.SMOKE_ALARM
    assert health.errors >= 1 and "unplugged" in health.last_error


def test_two_devices_claiming_one_code_keep_the_first(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    specs = load(
        tmp_path,
        ptys.a,
        {"pendant-101": ("elderly_alarm", PENDANT), "pendant-copy": ("elderly_alarm", PENDANT)},
    )
    rx = Receiver(ptys.b)

    async def script() -> None:
        rx.line(f"RX {PENDANT} SOS")
        await until(lambda: len(events(ctx)) == 1)

    run(specs, ctx, script)
    rx.close()
    assert events(ctx)[0].device.id == "pendant-101"
    available, reason = ctx.availability["pendant-copy"]
    assert not available and f"code {PENDANT} is also pendant-101's on the receiver" in reason


def test_a_receiver_plugged_in_after_start_is_found(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    specs = standard(tmp_path, tmp_path / "ttyA")  # the link socat will create

    async def main() -> None:
        driver = DRIVER.factory(specs, ctx)
        task = asyncio.create_task(driver.run())
        peers = contextlib.ExitStack()
        try:
            await until(lambda: len(ctx.availability) == 3)
            for available, reason in ctx.availability.values():
                assert not available and f"cannot open {tmp_path / 'ttyA'}" in reason
            pair = await asyncio.to_thread(peers.enter_context, pty_pair(tmp_path))
            await until(lambda: all(a for a, _ in ctx.availability.values()), timeout=8)
            rx = Receiver(pair.b)
            try:
                rx.line(f"RX {PENDANT} SOS")
                await until(lambda: len(events(ctx)) == 1)
            finally:
                rx.close()
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            peers.close()

    asyncio.run(main())
    assert [e.type for e in events(ctx, "pendant-101")] == [EventType.ELDERLY_SOS]
